"""Hostile inputs to the shared core: damaged scoring folders, run records, checkpoints and prepared
data. Each must be one error line naming the file, or a correct recovery — never a traceback and
never silently wrong output."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from core.checkpoint import CheckpointError, load_checkpoint, load_weights, save_checkpoint
from core.config import ResumeConfig, RunConfig
from core.runs import Run, RunNotFoundError, iter_metrics, latest_run_dir, list_runs, resolve_model_run
from core.scoring import ScoringError, file_items, job_status, read_output, read_quarantine, run_job
from core.scoring.__main__ import main as scoring_main
from tests.scoring_support import PriceFileScorer, output_checksum


@pytest.fixture
def scored(price_files, tmp_path):
    """A finished job of 6 items in 3 chunks, one item quarantined (chunk 1), and its checksum."""
    files = price_files[:6]
    (tmp_path / "BAD.csv").write_text("garbage\n")
    items = file_items([*files[:3], tmp_path / "BAD.csv", *files[3:5]])
    out = tmp_path / "out"
    run_job(items, PriceFileScorer(), out, items_per_chunk=2, progress=False)
    return items, out, output_checksum(out)


def _rerun(items, out):
    return run_job(items, PriceFileScorer(), out, items_per_chunk=2, progress=False)


@pytest.mark.parametrize("content", [b"", b'{"fingerprint": "ab', b"[1, 2]", b'{"fingerprint": "x"}', b"\xff\xfe\x00"])
def test_damaged_job_file_is_one_line_naming_it(scored, content, capsys):
    items, out, _ = scored
    (out / "_job.json").write_bytes(content)
    for read in (job_status, read_output, read_quarantine):
        with pytest.raises(ScoringError, match=r"_job\.json: damaged job description .*--overwrite"):
            read(out)
    with pytest.raises(ScoringError, match=r"_job\.json: damaged job description"):
        _rerun(items, out)
    assert scoring_main(["status", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "_job.json" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("content", [b'{"chunk": 1, "ro', b"[]", b'{"chunk": 2, "rows": 100, "quarantined": 0, "part": "part-000002.parquet", "part_sha256": "x"}',
                                     b'{"chunk": 1, "rows": 100, "quarantined": 1, "part": "../../etc/passwd", "part_sha256": "x"}'])
def test_damaged_marker_is_named_on_read_and_rescored_on_rerun(scored, content):
    items, out, checksum = scored
    (out / "_done" / "chunk-000001.json").write_bytes(content)
    with pytest.raises(ScoringError, match=r"chunk-000001\.json: damaged commit marker"):
        read_output(out)
    summary = _rerun(items, out)
    assert (summary.chunks_done, summary.chunks_skipped) == (1, 2)  # only the damaged chunk again
    assert output_checksum(out) == checksum and len(read_quarantine(out)) == 1


def test_marker_beyond_the_job_is_refused_and_dropped_on_rerun(scored):
    items, out, checksum = scored
    shutil.copy(out / "_done" / "chunk-000000.json", out / "_done" / "chunk-000099.json")
    with pytest.raises(ScoringError, match=r"chunk-000099\.json: damaged commit marker"):
        job_status(out)  # would count 4 of 3 chunks committed
    assert _rerun(items, out).chunks_done == 0
    assert job_status(out)["chunks_committed"] == 3 and output_checksum(out) == checksum


@pytest.mark.parametrize("damage", ["missing", "truncated", "other_part"])
def test_damaged_part_is_named_on_read_and_rescored_on_rerun(scored, damage):
    items, out, checksum = scored
    part = out / "part-000002.parquet"
    if damage == "missing":
        part.unlink()
    elif damage == "truncated":
        part.write_bytes(part.read_bytes()[:3000])
    else:
        shutil.copy(out / "part-000001.parquet", part)  # 1 row-holding item there, 2 here: other row count
    with pytest.raises(ScoringError, match=r"part-000002\.parquet: .*rerun the score command"):
        read_output(out)
    assert _rerun(items, out).chunks_done == 1
    assert output_checksum(out) == checksum


def test_same_size_edited_part_of_an_old_marker_is_rescored(scored):
    """Markers written before part sizes were recorded: the resume checks the part's sha256."""
    items, out, checksum = scored
    marker = out / "_done" / "chunk-000000.json"
    m = json.loads(marker.read_text())
    del m["part_bytes"], m["quarantine_bytes"]
    marker.write_text(json.dumps(m))
    shutil.copy(out / "part-000002.parquet", out / "part-000000.parquet")  # same row count, other rows
    with pytest.raises(ScoringError, match="checksum differs"):
        read_output(out, verify=True)
    assert _rerun(items, out).chunks_done == 1
    assert output_checksum(out) == checksum


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_damaged_quarantine_file_is_named_and_rescored(scored, damage, capsys):
    items, out, _ = scored
    q = out / "_quarantine" / "chunk-000001.parquet"
    q.unlink() if damage == "missing" else q.write_bytes(q.read_bytes()[:100])
    with pytest.raises(ScoringError, match=r"_quarantine/chunk-000001\.parquet"):
        read_quarantine(out)
    assert scoring_main(["quarantine", str(out)]) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert _rerun(items, out).chunks_done == 1
    assert read_quarantine(out)["item_id"].tolist() == ["BAD.csv"]


def test_out_that_is_a_file_and_a_folder_that_is_not_a_job(tmp_path, price_files):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ScoringError, match="not a folder"):
        run_job(file_items(price_files[:2]), PriceFileScorer(), tmp_path / "f", progress=False)
    assert scoring_main(["head", str(tmp_path)]) == 2


# ---------------------------------------------------------------------------------------------
# run records (core.runs)


def _run_folder(root: Path, name: str, run_json: bytes | None = None, **files: bytes) -> Path:
    d = root / "unit" / name
    d.mkdir(parents=True)
    if run_json is not None:
        (d / "run.json").write_bytes(run_json)
    for fname, data in files.items():
        (d / fname.replace("_", ".")).write_bytes(data)
    return d


def test_damaged_run_json_reads_as_damaged_naming_the_file(tmp_path):
    good = json.dumps({"status": "completed", "kind": "model", "started": "2026-01-01T00:00:00"}).encode()
    _run_folder(tmp_path, "good", good, metrics_json=b"[3]", config_json=b'"text"')
    _run_folder(tmp_path, "alist", b"[1, 2]")
    _run_folder(tmp_path, "numstatus", json.dumps({"status": 5, "started": 7}).encode())
    _run_folder(tmp_path, "binary", b"\xff\xfe{")
    runs = {r["name"]: r for r in list_runs(tmp_path, "unit")}  # one damaged run never breaks the listing
    assert {n: r["status"] for n, r in runs.items()} == {"good": "completed", "alist": "damaged", "numstatus": "damaged", "binary": "damaged"}
    assert runs["alist"]["error"].endswith("alist/run.json: a JSON list, expected an object")
    assert runs["good"]["metrics"] == {} and runs["good"]["config"] == {}
    for name in ("alist", "numstatus"):
        with pytest.raises(RunNotFoundError, match=rf"{name}/run.json"):
            resolve_model_run("unit", name, tmp_path)
    assert latest_run_dir("unit", tmp_path).name == "good"


def test_latest_link_loop_or_dangling_falls_back_to_the_newest_run(tmp_path):
    _run_folder(tmp_path, "good", json.dumps({"status": "completed", "kind": "model", "started": "2026"}).encode())
    (tmp_path / "unit" / "latest").symlink_to("latest2")
    (tmp_path / "unit" / "latest2").symlink_to("latest")
    assert latest_run_dir("unit", tmp_path).name == "good"
    (tmp_path / "unit" / "latest").unlink()
    (tmp_path / "unit" / "latest").symlink_to("gone")
    assert resolve_model_run("unit", None, tmp_path).name == "good"


@dataclass
class _Cfg(ResumeConfig, RunConfig):
    pass


@pytest.mark.parametrize("fragment", [b'{"step": 2, "lo', b'{"step": 2, "lo\xff'])
def test_metrics_row_cut_by_a_crash_is_dropped_not_glued_to_the_next(tmp_path, fragment):
    """A crash in the middle of a metrics row: the resumed run's next row must not be glued to the fragment."""
    run = Run.start("unit", _Cfg(runs_dir=str(tmp_path), name="cut"), command="train")
    for step in range(2):
        run.log_metrics({"loss": 1.0}, step)
    run._close("interrupted")
    with open(run.dir / "metrics.jsonl", "ab") as fh:
        fh.write(fragment)  # the process died in the middle of this row
    again = Run.start("unit", _Cfg(runs_dir=str(tmp_path), name="cut", resume=True), command="train")
    again.log_metrics({"loss": 0.5}, 2)
    again.finish()
    assert [(r["step"], r["loss"]) for r in iter_metrics(again.dir)] == [(0, 1.0), (1, 1.0), (2, 0.5)]
    assert (again.dir / "metrics.jsonl").read_bytes().endswith(b"\n")


# ---------------------------------------------------------------------------------------------
# checkpoints (core.checkpoint)


def _suite_ckpt(path: Path, **overrides) -> Path:
    import torch

    m = torch.nn.Linear(2, 2)
    save_checkpoint(path, model=m, optimizer=torch.optim.SGD(m.parameters(), lr=0.1), step=3)
    if overrides:
        payload = torch.load(path, weights_only=True)
        payload.update(overrides)
        for k in [k for k, v in overrides.items() if v is None]:
            del payload[k]
        torch.save(payload, path)
    return path


@pytest.mark.parametrize("case", ["empty", "truncated", "other_zip", "model_not_dict", "no_step", "rng_damaged"])
def test_damaged_checkpoint_is_one_checkpoint_error_naming_it(tmp_path, case):
    import torch
    import zipfile

    p = tmp_path / f"{case}.pt"
    if case == "empty":
        p.write_bytes(b"")
    elif case == "truncated":
        data = _suite_ckpt(p).read_bytes()
        p.write_bytes(data[: len(data) // 2])
    elif case == "other_zip":
        with zipfile.ZipFile(p, "w") as z:
            z.writestr("notes.txt", "hello")
    elif case == "model_not_dict":
        _suite_ckpt(p, model=torch.zeros(3))
    elif case == "no_step":
        _suite_ckpt(p, step=None)
    else:
        _suite_ckpt(p, rng={"python": [1]})
    m = torch.nn.Linear(2, 2)
    with pytest.raises(CheckpointError, match=str(p)) as e:
        load_checkpoint(p, model=m, optimizer=torch.optim.SGD(m.parameters(), lr=0.1))
    assert "\n" not in str(e.value)


def test_checkpoint_of_another_optimizer_shape_is_a_checkpoint_error(tmp_path):
    import torch

    p = _suite_ckpt(tmp_path / "c.pt")
    m = torch.nn.Linear(2, 2)
    two_groups = torch.optim.SGD([{"params": [m.weight]}, {"params": [m.bias]}], lr=0.1)
    with pytest.raises(CheckpointError, match=r"c\.pt: its optimizer state does not fit the SGD"):
        load_checkpoint(p, model=m, optimizer=two_groups)


def test_weights_file_that_is_not_a_state_dict(tmp_path):
    import torch

    torch.save(torch.zeros(3), tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match=r"w\.pt holds a Tensor, not a dict"):
        load_weights(tmp_path / "w.pt", model=torch.nn.Linear(2, 2))


# ---------------------------------------------------------------------------------------------
# prepared data (core.data)


@pytest.fixture
def toy_data(tmp_path, monkeypatch):
    from core import data as coredata

    monkeypatch.setattr(coredata, "cards_dir", lambda: tmp_path / "cards")
    src = tmp_path / "toy.csv"
    src.write_text("a,b\n1,2\n")
    builds = []

    def build(sources, out):
        builds.append(1)
        (out / "toy.json").write_text(json.dumps(sources["toy.csv"].read_text().splitlines()))

    spec = coredata.DatasetSpec(name="toy", domain="unit", description="toy", locate=lambda: {"toy.csv": src}, build=build)
    root = tmp_path / "root"
    coredata.prepare(spec, root=root)
    return spec, root, builds


@pytest.mark.parametrize("content", [b"[1]", b"\xff\xfe", b'{"outputs": 3}', b'{"na'])
def test_damaged_manifest_is_rebuilt_and_refused_by_dataset_dir(toy_data, content):
    from core.data import dataset_dir, ensure_dataset, prepare

    spec, root, builds = toy_data
    (root / "toy" / "MANIFEST.json").write_bytes(content)
    with pytest.raises(FileNotFoundError, match=r"toy/MANIFEST\.json"):
        dataset_dir("toy", root)
    assert ensure_dataset(spec, root) == root / "toy" and len(builds) == 2  # rebuilt, not used as it was
    assert dataset_dir("toy", root) and prepare(spec, root=root) and len(builds) == 2  # now up to date


@pytest.mark.parametrize("edit", ["removed", "appended"])
def test_prepared_file_edited_by_hand_is_not_used_as_is(toy_data, edit):
    from core.data import dataset_dir, ensure_dataset

    spec, root, builds = toy_data
    f = root / "toy" / "toy.json"
    f.unlink() if edit == "removed" else f.write_text(f.read_text() + "\n[]")
    with pytest.raises(FileNotFoundError, match=r"toy/toy\.json"):
        dataset_dir("toy", root)
    ensure_dataset(spec, root)
    assert len(builds) == 2 and json.loads(f.read_text()) == ["a,b", "1,2"]


def test_data_root_that_is_a_file_is_one_line(toy_data, tmp_path):
    from core.data import prepare

    spec, _, _ = toy_data
    (tmp_path / "afile").write_text("x")
    with pytest.raises(NotADirectoryError, match="afile is a file"):
        prepare(spec, root=tmp_path / "afile")


def test_success_flag_goes_while_a_damaged_folder_is_rescored(scored, monkeypatch):
    import core.scoring.engine as engine

    items, out, checksum = scored
    (out / "part-000002.parquet").unlink()

    def dies(*a, **k):
        raise KeyboardInterrupt  # Ctrl-C while the damaged chunk is scored again

    monkeypatch.setattr(engine, "score_chunk", dies)
    with pytest.raises(KeyboardInterrupt):
        _rerun(items, out)
    assert not (out / "_SUCCESS.json").exists() and not job_status(out)["complete"]
    monkeypatch.undo()
    assert _rerun(items, out).chunks_done == 1 and (out / "_SUCCESS.json").exists() and output_checksum(out) == checksum


@pytest.mark.parametrize("sub", ["_done", "_quarantine"])
def test_bookkeeping_folder_replaced_by_a_file(scored, sub):
    items, out, _ = scored
    shutil.rmtree(out / sub)
    (out / sub).write_text("x")
    with pytest.raises(ScoringError, match=rf"{sub}: a file where the job keeps"):
        job_status(out)  # before: 0 chunks committed (or a traceback on rerun)
    with pytest.raises(ScoringError, match=rf"{sub}: a file where the job keeps .*--overwrite"):
        _rerun(items, out)
    assert run_job(items, PriceFileScorer(), out, items_per_chunk=2, progress=False, overwrite=True).chunks_done == 3


def test_named_run_with_a_damaged_record_is_not_reset(tmp_path):
    from core.errors import UserInputError

    d = _run_folder(tmp_path, "kept", b"[1, 2]", metrics_jsonl=b'{"step": 0, "loss": 1.0}\n')
    (d / "checkpoints").mkdir()
    (d / "checkpoints" / "step_00000001.pt").write_bytes(b"x")
    with pytest.raises(UserInputError, match=r"kept/run\.json: a JSON list.*choose another --name"):
        Run.start("unit", _Cfg(runs_dir=str(tmp_path), name="kept"), command="train")
    assert (d / "metrics.jsonl").exists() and (d / "checkpoints" / "step_00000001.pt").exists()
    assert (d / "run.json").read_bytes() == b"[1, 2]"


def test_job_killed_before_its_job_file_resumes(tmp_path, price_files):
    """Killed between writing _items.jsonl and _job.json: the rerun (and --overwrite) used to refuse the folder as not a job."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "_items.jsonl").write_text('{"id": "half')
    (out / "._job.tmp-x1y2.json").write_text("{")
    (out / "_job.lock").write_text("123\n")
    summary = run_job(file_items(price_files[:4]), PriceFileScorer(), out, items_per_chunk=2, progress=False)
    assert summary.chunks_done == 2 and not (out / "._job.tmp-x1y2.json").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(ScoringError, match="holds no scoring job"):  # a user's folder is still refused
        run_job(file_items(price_files[:4]), PriceFileScorer(), tmp_path / "mine", progress=False)


def test_latest_checkpoint_ignores_a_folder_named_like_one(tmp_path):
    from core.checkpoint import latest_checkpoint

    good = _suite_ckpt(tmp_path / "step_00000003.pt")
    (tmp_path / "step_00000009.pt").mkdir()  # before: chosen, then "does not exist"
    assert latest_checkpoint(tmp_path) == good


@pytest.mark.parametrize("pid", [[1], {"a": 1}, 10**30, "x"])
def test_running_run_with_a_hand_edited_pid_is_listed(tmp_path, pid):
    _run_folder(tmp_path, "r", json.dumps({"status": "running", "pid": pid, "started": "2026"}).encode())
    assert [r["status"] for r in list_runs(tmp_path, "unit")] == ["running"]  # unknowable writer: left as recorded


def test_read_output_of_unknown_columns_is_not_called_corrupt(scored):
    _, out, _ = scored
    with pytest.raises(ScoringError, match=r"no column\(s\) \['nope'\]; it has \['work_item', 'date'") as e:
        read_output(out, columns=["nope", "date"])
    assert "corrupt" not in str(e.value) and "rerun" not in str(e.value)
    assert list(read_output(out, columns=["date"]).columns) == ["date"]


def test_empty_data_root_variable_means_the_default(monkeypatch):
    from core.data import REPO_ROOT, data_root

    monkeypatch.setenv("SUITE_DATA_ROOT", "")
    assert data_root() == REPO_ROOT / "datasets" / "data"  # before: Path("") = the current folder


def test_data_cli_refuses_abbreviated_flags(capsys):
    from core.data import main

    with pytest.raises(SystemExit) as e:
        main(["prepare", "no-such-set", "--rec"])  # was taken as --record-checksums, which rewrites dataset cards
    assert e.value.code == 2 and "unrecognized arguments: --rec" in capsys.readouterr().err
