"""Run directories, checkpoints and resume, MLflow read-back."""

import json
from dataclasses import dataclass, fields

import pytest
import torch

from core.checkpoint import CheckpointError, load_checkpoint, load_weights, save_checkpoint, save_weights
from core.config import DeviceConfig, ResumeConfig, RunConfig, SeedConfig, TrackingConfig
from core.runs import Run, latest_run_dir, list_runs


@dataclass
class TinyConfig(TrackingConfig, SeedConfig, DeviceConfig, ResumeConfig, RunConfig):
    steps: int = 10
    lr: float = 0.05


def _train(cfg: TinyConfig, stop_after: int | None = None) -> tuple[Run, torch.nn.Module]:
    """A tiny real training loop with dropout (uses RNG) and a scheduler, checkpointing every step."""
    run = Run.start("unit", cfg)
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Dropout(0.3), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
    state = run.resume(model, opt, sched)
    for step in range(state["step"], cfg.steps):
        x = torch.randn(8, 4)
        loss = ((model(x) - x.sum(1, keepdim=True)) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        run.log_metrics({"loss": loss.item()}, step)
        run.save_checkpoint(model, opt, sched, step=step + 1)
        if stop_after is not None and step + 1 == stop_after:
            run._close("interrupted")  # simulate a crash: no finish()
            return run, model
    run.finish({"final_loss": loss.item()})
    return run, model


def test_resume_matches_uninterrupted_run(tmp_path):
    ref_run, ref = _train(TinyConfig(runs_dir=str(tmp_path), name="ref", seed=3, track=False))
    _train(TinyConfig(runs_dir=str(tmp_path), name="crashy", seed=3, track=False), stop_after=4)
    resumed_run, resumed = _train(TinyConfig(runs_dir=str(tmp_path), name="crashy", seed=3, track=False, resume=True))
    for a, b in zip(ref.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert resumed_run.dir == tmp_path / "unit" / "crashy"
    # a different seed really gives different weights (so the equality above means something)
    _, other = _train(TinyConfig(runs_dir=str(tmp_path), name="other", seed=4, track=False))
    assert not torch.equal(next(iter(ref.state_dict().values())), next(iter(other.state_dict().values())))


def test_run_dir_contents_and_latest(tmp_path):
    run, _ = _train(TinyConfig(runs_dir=str(tmp_path), name="r1", track=False))
    d = run.dir
    assert {"config.json", "run.json", "metrics.json", "metrics.jsonl", "log.jsonl"} <= {p.name for p in d.iterdir()}
    assert latest_run_dir("unit", tmp_path) == d.resolve()
    runs = list_runs(tmp_path, "unit")
    assert runs[0]["status"] == "completed" and runs[0]["config"]["steps"] == 10
    # a second run with the same explicit name never overwrites the finished one
    run2, _ = _train(TinyConfig(runs_dir=str(tmp_path), name="r1", track=False))
    assert run2.dir != d and (d / "metrics.json").is_file()


def test_failed_run_is_marked(tmp_path):
    with pytest.raises(ValueError):
        with Run.start("unit", TinyConfig(runs_dir=str(tmp_path), name="boom", track=False)):
            raise ValueError("bad input")
    info = list_runs(tmp_path, "unit")[0]
    assert info["status"] == "failed" and "bad input" in info["error"]


def test_checkpoint_rejects_pickled_objects_and_corruption(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    p = tmp_path / "evil.pt"
    torch.save({"format": "suite-checkpoint-v1", "model": {}, "x": Evil()}, p)
    with pytest.raises(CheckpointError, match="pickled objects"):
        load_checkpoint(p)
    good = tmp_path / "good.pt"
    m = torch.nn.Linear(2, 2)
    save_checkpoint(good, model=m, step=1)
    good.write_bytes(good.read_bytes()[:100])  # truncated
    with pytest.raises(CheckpointError, match="corrupt|truncated"):
        load_checkpoint(good, model=m)


def test_checkpoint_shape_mismatch_is_clear(tmp_path):
    p = save_checkpoint(tmp_path / "c.pt", model=torch.nn.Linear(2, 3), step=0)
    with pytest.raises(CheckpointError, match="does not fit"):
        load_checkpoint(p, model=torch.nn.Linear(2, 4))


def test_safetensors_roundtrip_with_tied_weights(tmp_path):
    emb = torch.nn.Embedding(5, 3)
    head = torch.nn.Linear(3, 5, bias=False)
    head.weight = emb.weight  # tied
    model = torch.nn.ModuleDict({"emb": emb, "head": head})
    p = save_weights(tmp_path / "w.safetensors", model)
    fresh = torch.nn.ModuleDict({"emb": torch.nn.Embedding(5, 3), "head": torch.nn.Linear(3, 5, bias=False)})
    load_weights(p, fresh)
    torch.testing.assert_close(fresh["head"].weight, emb.weight)


def test_mlflow_run_readable_through_mlflow_client(tmp_path):
    from mlflow.tracking import MlflowClient

    run, _ = _train(TinyConfig(runs_dir=str(tmp_path), name="tracked", steps=5, track=True))
    client = MlflowClient(tracking_uri=run.tracker.uri)
    assert run.tracker.uri.startswith("sqlite:///") and str(tmp_path) in run.tracker.uri
    mlrun = client.get_run(run.tracker.run_id)
    assert mlrun.info.status == "FINISHED"
    assert mlrun.data.params["steps"] == "5" and mlrun.data.params["domain"] == "unit"
    history = client.get_metric_history(run.tracker.run_id, "loss")
    assert [m.step for m in history] == [0, 1, 2, 3, 4]
    arts = {a.path for a in client.list_artifacts(run.tracker.run_id)}
    assert {"config.json", "metrics.json"} <= arts


def test_metric_names_mlflow_rejects_are_sanitised(tmp_path):
    from mlflow.tracking import MlflowClient

    run = Run.start("unit", TinyConfig(runs_dir=str(tmp_path), name="ranking", track=True))
    run.log_metrics({"ndcg@10": 0.5, "two_tower/precision@10": 0.25}, step=0)
    run.finish({"recall@10": 0.4})
    assert run.tracker.enabled, "tracking must not be disabled by an '@' in a metric name"
    m = MlflowClient(tracking_uri=run.tracker.uri).get_run(run.tracker.run_id).data.metrics
    assert m["ndcg_at_10"] == 0.5 and m["two_tower/precision_at_10"] == 0.25 and m["recall_at_10"] == 0.4


def test_job_runs_do_not_move_latest_and_resume_picks_the_same_command(tmp_path):
    @dataclass
    class ScoreLikeConfig(TrackingConfig, RunConfig):
        k: int = 1

    model_run, _ = _train(TinyConfig(runs_dir=str(tmp_path), name="model", steps=2, track=False))
    with Run.start("unit", ScoreLikeConfig(runs_dir=str(tmp_path), name="job", track=False), kind="job") as job:
        job.finish({"rows": 3})
    assert latest_run_dir("unit", tmp_path) == model_run.dir.resolve()
    assert {r["name"]: r["kind"] for r in list_runs(tmp_path, "unit")} == {"model": "model", "job": "job"}
    resumed = Run.start("unit", TinyConfig(runs_dir=str(tmp_path), resume=True, track=False))
    assert resumed.dir == model_run.dir  # the newest run is the job, but a train run resumes a train run
    resumed.finish()


def test_weight_mismatch_names_the_file_the_tensor_and_both_shapes(tmp_path):
    small = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1))
    big = torch.nn.Sequential(torch.nn.Linear(2, 5), torch.nn.ReLU(), torch.nn.Linear(5, 1))
    p = save_weights(tmp_path / "model.safetensors", small)
    with pytest.raises(CheckpointError) as e:
        load_weights(p, big)
    msg = str(e.value)
    assert str(p) in msg and "'0.weight'" in msg and "(3, 2)" in msg and "(5, 2)" in msg and "\n" not in msg, msg
    ck = save_checkpoint(tmp_path / "step_1.pt", model=small, step=1)
    with pytest.raises(CheckpointError, match=r"step_1\.pt does not fit Sequential: tensor '0.weight' has shape \(3, 2\) in the file but the model expects \(5, 2\)"):
        load_checkpoint(ck, model=big)
    with pytest.raises(CheckpointError, match=r"'2.weight' is missing from the file"):
        load_weights(save_weights(tmp_path / "half.safetensors", {"0.weight": small[0].weight, "0.bias": small[0].bias}), small)


def test_corrupt_parquet_error_names_the_file(tmp_path):
    from core.errors import UserInputError
    from core.io import read_parquet

    p = tmp_path / "prices.parquet"
    p.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(UserInputError, match=f"{p}: not a readable Parquet file"):
        read_parquet(p)


def test_messages_show_plain_numbers():
    import numpy as np

    from core.errors import plain

    assert plain(np.float64(150.0)) == "150" and plain(np.float32(0.25)) == "0.25" and plain(torch.tensor(3)) == "3"
    assert plain([np.int64(1), np.float64(2.5)]) == "[1, 2.5]" and "np." not in plain({"a": np.float64(1e-9)})


def test_resume_logs_each_step_once(tmp_path):
    """Rows logged after the last checkpoint (work the crash lost) are dropped on --resume, so the
    redone steps appear once in metrics.jsonl; the caller's checkpoint extra comes back unchanged."""
    import json

    model = torch.nn.Linear(2, 1)
    run = Run.start("unit", TinyConfig(runs_dir=str(tmp_path), name="dup", track=False), command="train")
    for step in range(3):
        run.log_metrics({"loss": 1.0 / (step + 1)}, step)
    run.save_checkpoint(model, step=3, extra={"mine": 1})
    for step in (3, 4):  # logged, then the process dies before the next checkpoint
        run.log_metrics({"loss": 0.1}, step)
    run._close("interrupted")
    resumed = Run.start("unit", TinyConfig(runs_dir=str(tmp_path), name="dup", track=False, resume=True), command="train")
    state = resumed.resume(model)
    assert state["step"] == 3 and state["extra"] == {"mine": 1}
    for step in (3, 4):
        resumed.log_metrics({"loss": 0.2}, step)
    resumed.finish()
    steps = [json.loads(line)["step"] for line in (resumed.dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 1, 2, 3, 4]


def test_resume_names_the_settings_that_changed(tmp_path, monkeypatch):
    """A resumed run whose result-deciding settings differ from the interrupted attempt's says which (one line)."""
    import core.runs

    said: list[str] = []
    monkeypatch.setattr(core.runs.log, "warning", lambda msg, *a, **k: said.append(str(msg)))
    _train(TinyConfig(runs_dir=str(tmp_path), name="crashy", seed=3, track=False), stop_after=4)
    _train(TinyConfig(runs_dir=str(tmp_path), name="crashy", seed=3, track=False, resume=True))
    assert not [m for m in said if "differ from the interrupted run" in m]  # same settings: nothing to say
    _train(TinyConfig(runs_dir=str(tmp_path), name="crashy2", seed=3, track=False), stop_after=4)
    _train(TinyConfig(runs_dir=str(tmp_path), name="crashy2", seed=3, track=False, resume=True, lr=0.01))
    lines = [m for m in said if "differ from the interrupted run" in m]
    assert len(lines) == 1 and "lr: 0.05 -> 0.01" in lines[0] and "resume" not in lines[0].split("(")[1]


def test_a_failed_resume_of_a_completed_run_leaves_it_completed_and_a_successful_one_extends_it(tmp_path):
    """--resume of a finished run whose checkpoint does not fit (e.g. other --data) used to mark the finished
    run failed and overwrite its config.json with the failed attempt's: the model became unusable."""
    done, _ = _train(TinyConfig(runs_dir=str(tmp_path), name="done", steps=4, track=False))
    before = {n: (done.dir / n).read_bytes() for n in ("run.json", "config.json", "metrics.json", "metrics.jsonl")}
    run = Run.start("unit", TinyConfig(runs_dir=str(tmp_path), name="done", steps=6, lr=0.01, track=False, resume=True))
    wider = torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.Dropout(0.3), torch.nn.ReLU(), torch.nn.Linear(32, 1))
    with pytest.raises(CheckpointError):
        with run:
            run.resume(wider)
    assert {n: (done.dir / n).read_bytes() for n in before} == before
    assert list_runs(tmp_path, "unit")[0]["status"] == "completed"
    assert latest_run_dir("unit", tmp_path) == done.dir.resolve()
    # a resume that does new work is that work's run: six steps, the new config, completed again
    more, _ = _train(TinyConfig(runs_dir=str(tmp_path), name="done", steps=6, track=False, resume=True))
    info = list_runs(tmp_path, "unit")[0]
    assert more.dir == done.dir and info["status"] == "completed" and info["config"]["steps"] == 6
    assert [r for r in (done.dir / "metrics.jsonl").read_text().splitlines()][-1].startswith('{"step": 5')


def test_private_config_fields_reach_neither_config_json_nor_mlflow(tmp_path):
    """A scan's path may carry a patient's name (/data/DOE^JOHN/series1): a field declared private is not recorded."""
    from dataclasses import field

    from mlflow.tracking import MlflowClient

    from core.config import PRIVATE_VALUE
    from domains.medical.config import InferConfig, ScoreConfig

    @dataclass
    class JobConfig(TrackingConfig, RunConfig):
        input: str | None = field(default=None, metadata={"private": True})
        k: int = 3

    secret = str(tmp_path / "DOE^JOHN" / "series1")
    with Run.start("unit", JobConfig(runs_dir=str(tmp_path), name="job", input=secret, track=True), command="infer", kind="job") as run:
        run.finish({"rows": 1})
    recorded = json.loads((run.dir / "config.json").read_text())
    assert recorded["input"] == PRIVATE_VALUE and recorded["k"] == 3
    params = MlflowClient(tracking_uri=run.tracker.uri).get_run(run.tracker.run_id).data.params
    assert params["input"] == PRIVATE_VALUE and params["k"] == "3"
    assert not [p for p in run.dir.rglob("*") if p.is_file() and "DOE^JOHN" in p.read_text(errors="ignore")]
    for cls in (InferConfig, ScoreConfig):  # the medical commands that read scans a user names
        assert next(f for f in fields(cls) if f.name == "input").metadata.get("private") is True
