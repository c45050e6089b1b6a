"""`prepare --force` beside a reader: the prepared folder is swapped in one step, so a process reading the
data set meanwhile (a training) never finds the folder missing, a half-written file or a false 'damaged'."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core import data as coredata
from core.data import DatasetSpec, prepare

REPO = Path(__file__).resolve().parents[2]
BASE = 4000  # generation g writes BASE + 7*g bytes, every byte g % 256: a mixed or cut file is detectable

READER = r"""
import json, sys, time
from pathlib import Path
from core.data import dataset_dir
root, stop, base = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
reads, problems = 0, []
while not stop.exists():
    try:
        d = dataset_dir("swaptoy", root)
        data = (d / "data.bin").read_bytes()
        g = (len(data) - base) // 7
        if (len(data) - base) % 7 or data != bytes([g % 256]) * len(data):
            problems.append(f"mixed or cut file: {len(data)} bytes")
        reads += 1
    except Exception as e:
        problems.append(f"{type(e).__name__}: {e}")
print(json.dumps({"reads": reads, "problems": problems[:5], "n_problems": len(problems)}))
"""


@pytest.fixture
def cards(tmp_path, monkeypatch):
    monkeypatch.setattr(coredata, "cards_dir", lambda: tmp_path / "cards")


def _spec(src: Path, generation: list[int]) -> DatasetSpec:
    def build(sources, out):
        generation[0] += 1
        g = generation[0]
        (out / "data.bin").write_bytes(bytes([g % 256]) * (BASE + 7 * g))
        (out / "notes.txt").write_text(f"generation {g}\n")

    return DatasetSpec(name="swaptoy", domain="unit", description="swap toy", locate=lambda: {"src.txt": src}, build=build)


def test_force_rebuild_beside_a_reader_process_never_shows_a_missing_or_half_folder(tmp_path, cards):
    src = tmp_path / "src.txt"
    src.write_text("x\n")
    generation = [0]
    spec = _spec(src, generation)
    root = tmp_path / "data root ü"  # a path with a space and non-ASCII
    prepare(spec, root=root, record_checksums=True)
    stop = tmp_path / "stop"
    reader = subprocess.Popen([sys.executable, "-c", READER, str(root), str(stop), str(BASE)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)  # the reader is looping (import done)
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            prepare(spec, root=root, force=True)
    finally:
        stop.touch()
        out, _ = reader.communicate(timeout=30)
    res = json.loads(out)
    assert generation[0] > 50 and res["reads"] > 100, (generation, res)
    assert res["n_problems"] == 0, res
    assert sorted(p.name for p in root.iterdir()) == [".swaptoy.lock", "swaptoy"]  # the old folders are gone
    assert (root / "swaptoy" / "notes.txt").read_text() == f"generation {generation[0]}\n"


def test_without_an_atomic_swap_the_rebuild_still_completes(tmp_path, cards, monkeypatch):
    """A filesystem or C library without RENAME_EXCHANGE: two renames, the new folder in place, no leftovers."""
    monkeypatch.setattr(coredata, "_exchange", lambda a, b: False)
    src = tmp_path / "src.txt"
    src.write_text("x\n")
    generation = [0]
    spec = _spec(src, generation)
    root = tmp_path / "root"
    prepare(spec, root=root, record_checksums=True)
    prepare(spec, root=root, force=True)
    assert (root / "swaptoy" / "notes.txt").read_text() == "generation 2\n"
    assert sorted(p.name for p in root.iterdir()) == [".swaptoy.lock", "swaptoy"]
    assert coredata.dataset_dir("swaptoy", root) == root / "swaptoy"


def test_exchange_swaps_two_folders(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "f").write_text("A")
    (b / "f").write_text("B")
    if not coredata._exchange(a, b):
        pytest.skip("no renameat2(RENAME_EXCHANGE) on this system/filesystem")
    assert (a / "f").read_text() == "B" and (b / "f").read_text() == "A"
