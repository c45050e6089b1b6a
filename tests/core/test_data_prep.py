"""Data preparation: idempotent, verified against the card's checksums, atomic."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from core import data as coredata
from core.io import sha256_file
from core.data import CorruptSourceError, DatasetSpec, SourceMissingError, prepare, read_card_checksums


def _spec(tmp_path, src, calls):
    def locate():
        if not src.exists():
            raise SourceMissingError("toy source missing: install it with `pip install toy-data`")
        return {"toy.csv": src}

    def build(sources, out):
        calls.append(1)
        rows = sources["toy.csv"].read_text().splitlines()
        (out / "toy.json").write_text(json.dumps(rows))

    return DatasetSpec(name="toy", domain="unit", description="toy", locate=locate, build=build)


@pytest.fixture
def cards(tmp_path, monkeypatch):
    monkeypatch.setattr(coredata, "cards_dir", lambda: tmp_path / "cards")
    return tmp_path / "cards"


def test_prepare_is_idempotent_and_verifies(tmp_path, cards):
    src = tmp_path / "toy.csv"
    src.write_text("a,b\n1,2\n")
    calls = []
    spec = _spec(tmp_path, src, calls)
    root = tmp_path / "root"
    out = prepare(spec, root=root, record_checksums=True)
    assert read_card_checksums(spec.card)["toy.csv"]
    first = (out / "MANIFEST.json").read_text()
    prepare(spec, root=root)
    assert len(calls) == 1, "second prepare with unchanged sources must not rebuild"
    assert (out / "MANIFEST.json").read_text() == first
    # a modified output is detected and rebuilt
    (out / "toy.json").write_text("tampered")
    prepare(spec, root=root)
    assert len(calls) == 2 and json.loads((out / "toy.json").read_text()) == ["a,b", "1,2"]


def test_corrupted_source_rejected_with_clear_message(tmp_path, cards):
    src = tmp_path / "toy.csv"
    src.write_text("a,b\n1,2\n")
    spec = _spec(tmp_path, src, [])
    prepare(spec, root=tmp_path / "root", record_checksums=True)
    src.write_text("a,b\n1,999\n")  # flipped bytes
    with pytest.raises(CorruptSourceError) as e:
        prepare(spec, root=tmp_path / "root", force=True)
    assert "toy.csv" in str(e.value) and "Reinstall" in str(e.value)


def test_missing_source_names_install_command(tmp_path, cards):
    spec = _spec(tmp_path, tmp_path / "absent.csv", [])
    with pytest.raises(SourceMissingError, match="pip install toy-data"):
        prepare(spec, root=tmp_path / "root")


def test_failed_build_leaves_previous_data(tmp_path, cards):
    src = tmp_path / "toy.csv"
    src.write_text("x\n")
    calls = []
    spec = _spec(tmp_path, src, calls)
    out = prepare(spec, root=tmp_path / "root", record_checksums=True)

    def broken(sources, out_dir):
        (out_dir / "half.json").write_text("{")
        raise RuntimeError("crash mid-build")

    spec.build = broken
    with pytest.raises(RuntimeError):
        prepare(spec, root=tmp_path / "root", force=True)
    assert (out / "toy.json").is_file() and not (out / "half.json").exists()
    assert sorted(p.name for p in (tmp_path / "root").iterdir()) == [".toy.lock", "toy"]  # no half-built folder; the lock file stays


def test_registered_real_datasets_verify_against_cards():
    """Every registered real data set whose source is installed matches its card's checksums."""
    specs = coredata.registered_datasets()
    if not specs:
        pytest.skip("no domain has registered data sets yet")
    checked = 0
    for spec in specs.values():
        try:
            sources = spec.locate()
        except SourceMissingError:
            continue
        expected = read_card_checksums(spec.card)
        assert expected, f"dataset card {spec.card} records no source checksums"
        coredata.verify_sources(spec, sources)
        checked += 1
    assert checked > 0


def test_ensure_dataset_prepares_once_then_reuses(tmp_path, cards):
    from core.data import ensure_dataset

    src = tmp_path / "toy.csv"
    src.write_text("a\n")
    calls = []
    spec = _spec(tmp_path, src, calls)
    first = ensure_dataset(spec, root=tmp_path / "root")
    second = ensure_dataset(spec, root=tmp_path / "root")
    assert first == second and len(calls) == 1


# --- Debian data packages without root (issue 13.1) ---------------------------------------------

_MRICRON_FILES = ["/usr/share/mricron/templates/ch2bet.nii.gz", "/usr/share/mricron/templates/aal.nii.gz"]


@pytest.mark.skipif(not (shutil.which("apt-get") and shutil.which("dpkg-deb")), reason="no apt-get/dpkg-deb on this machine")
def test_debian_data_fetched_without_root_and_checked_against_card():
    """The medical sources come from `apt-get download` + `dpkg-deb -x` run as an unprivileged user
    (uid 65534 when the test runs as root), never from the system install, and match the card's sha256."""
    import tempfile

    tmp_path = Path(tempfile.mkdtemp(prefix="suite-deb-"))  # pytest's tmp_path sits under a 0700 folder the user can't enter
    tmp_path.chmod(0o777)
    try:
        _check_debian_fetch(tmp_path)
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)


def _check_debian_fetch(tmp_path: Path) -> None:
    cache_root = tmp_path / "data"
    code = f"""
import os, sys, json
os.environ["SUITE_DATA_ROOT"] = {str(cache_root)!r}
from core.data import debian_package_files
if os.getuid() == 0:
    os.setgid(65534); os.setuid(65534)
os.environ["HOME"] = {str(tmp_path)!r}
try:
    files = debian_package_files("mricron-data", {_MRICRON_FILES!r}, system=False)
except Exception as e:
    print("FETCH-FAILED", type(e).__name__, e)
    sys.exit(3 if "apt-get download" in str(e) else 4)  # 3: the registry is unreachable -> skip
print(json.dumps({{"uid": os.getuid(), "files": {{k: str(v) for k, v in files.items()}}}}))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=coredata.REPO_ROOT)
    if r.returncode == 3:
        pytest.skip(f"Debian package registry not reachable: {r.stdout.strip()[-200:]}")
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["uid"] != 0
    card = read_card_checksums(coredata.cards_dir() / "msd-brain-aal" / "README.md")
    for name, path in out["files"].items():
        p = Path(path)
        assert str(cache_root / ".debian" / "mricron-data") in path and p.is_file()
        assert sha256_file(p) == card[name], f"{name} differs from the dataset card"
    # a second call finds the cache and fetches nothing (no apt-get needed any more)
    r2 = subprocess.run([sys.executable, "-c", "import os; os.environ['PATH']='/nonexistent'\n" + code], capture_output=True, text=True,
                        timeout=60, cwd=coredata.REPO_ROOT)
    assert r2.returncode == 0, r2.stdout + r2.stderr


def test_no_apt_gives_one_line_and_optional_sets_are_skipped(tmp_path, monkeypatch, capsys):
    """Without the packages and without apt, the medical data sets are skipped with one line; prepare exits 0."""
    monkeypatch.setenv("SUITE_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.setattr(coredata.shutil, "which", lambda name: None)
    with pytest.raises(SourceMissingError) as ei:
        coredata.debian_package_files("mricron-data", ["/nonexistent/mricron/ch2.nii.gz"])
    assert "no apt-get" in str(ei.value) and "\n" not in str(ei.value)
    monkeypatch.setattr(coredata, "registered_datasets", lambda: {
        "needs-deb": DatasetSpec(name="needs-deb", domain="unit", description="x", optional=True,
                                 locate=lambda: coredata.debian_package_files("nope-data", ["/nonexistent/x"]), build=lambda s, o: None)})
    assert coredata.main(["prepare", "all", "--root", str(tmp_path / "root")]) == 0
    out = capsys.readouterr().out
    assert "skipped" in out and "needs-deb" in out


def test_safe_extract_tar_refuses_traversal(tmp_path):
    import io
    import tarfile

    bad = tmp_path / "bad.tar"
    with tarfile.open(bad, "w") as tf:
        data = b"x"
        info = tarfile.TarInfo("../escape.txt")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    with pytest.raises(Exception):
        coredata.safe_extract_tar(bad, tmp_path / "out")
    assert not (tmp_path / "escape.txt").exists()
    good = tmp_path / "good.tar"
    with tarfile.open(good, "w") as tf:
        info = tarfile.TarInfo("task/dataset.json")
        info.size = 2
        tf.addfile(info, io.BytesIO(b"{}"))
    coredata.safe_extract_tar(good, tmp_path / "out2")
    assert (tmp_path / "out2" / "task" / "dataset.json").read_text() == "{}"
