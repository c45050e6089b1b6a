"""Pages on run folders someone else left behind: half-written or damaged run files, links planted in
the runs folder, tables with missing columns (odd uploads: test_uploads.py). Every page shows a readable message, never a
traceback, and never reads through a link that leads out of the runs folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[2] / "dashboards" / "app.py")


def _run(root: Path, domain: str, name: str, run_json: str | None = None, **files: str) -> Path:
    d = root / domain / name
    d.mkdir(parents=True)
    (d / "run.json").write_text(run_json if run_json is not None else
                                json.dumps({"status": "completed", "kind": "model", "started": "2026-01-01T00:00:00"}))
    for fname, text in files.items():
        (d / fname.replace("__", ".")).write_text(text)
    return d


@pytest.fixture
def damaged_runs(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "runs"
    _run(root, "medical", "ok")
    _run(root, "medical", "run-json-list", "[1, 2]")
    _run(root, "medical", "run-json-string", '"hello"')
    _run(root, "medical", "half-written", '{"status": "compl')
    _run(root, "medical", "binary", "")
    (root / "medical" / "binary" / "run.json").write_bytes(b"\xff\xfe\x00garbage")
    _run(root, "medical", "started-null", '{"status": "completed", "started": null}')
    _run(root, "medical", "started-number", '{"status": "completed", "started": 5, "domain": null}')
    _run(root, "medical", "status-list", '{"status": ["a"], "started": "2026-01-02"}')
    _run(root, "medical", "status-number", '{"status": 3, "started": "2026-01-02"}')
    _run(root, "medical", "metrics-odd", metrics__json='{"dice": NaN, "loss": "abc", "x": Infinity}', config__json="[1, 2]")
    _run(root, "medical", "metrics-list", metrics__json="[1, 2, 3]", config__json='"x"')
    _run(root, "medical", "failed [click](javascript:x) `x` *y*",
         '{"status": "failed", "started": "2026-01-03", "error": "boom [click](http://evil.example) <b>x</b> $x^2$"}')
    # the newest run, so the overview's detail shows its curves: lines that are not objects, a cut last line
    _run(root, "medical", "curves", json.dumps({"status": "completed", "kind": "model", "started": "2026-02-01T00:00:00"}),
         metrics__jsonl='{"step": 1, "loss": 0.5}\n[1, 2]\n"x"\n{"step": "a", "loss": "NaN"}\n{"step": 2, "loss": 0.4}\n{"step')
    (root / "medical" / "a-file").write_text("not a run")
    (root / "medical" / "run-json-is-a-folder").mkdir()
    (root / "medical" / "run-json-is-a-folder" / "run.json").mkdir()
    outside = _run(tmp_path / "elsewhere", "x", "planted", json.dumps({"status": "completed", "kind": "model", "started": "2027-01-01"}))
    (root / "medical" / "latest").symlink_to(outside)
    (root / "medical" / "planted-link").symlink_to(outside)
    (root / "medical" / "loop").symlink_to("loop")
    (root / "finance").symlink_to(outside.parent)  # a domain folder that is a link out of the runs folder
    _run(root, "medical", "links-out", json.dumps({"status": "completed", "kind": "model", "started": "2026-01-04"}))
    (root / "medical" / "links-out" / "metrics.json").symlink_to(outside / "run.json")
    monkeypatch.setenv("SUITE_RUNS_DIR", str(root))
    return root


def _no_traceback(at: AppTest) -> None:
    assert not at.exception, [e.message for e in at.exception]


def test_overview_lists_damaged_runs_as_damaged_and_follows_no_link(damaged_runs):
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    _no_traceback(at)
    table = next(d.value for d in at.dataframe if {"run", "status"} <= set(d.value.columns))
    status = dict(zip(table["run"], table["status"]))
    for name in ("run-json-list", "run-json-string", "half-written", "binary", "links-out"):
        assert status[name] == "damaged", (name, status)
    assert status["status-list"] == "damaged" and status["status-number"] == "damaged" and status["ok"] == "completed"
    assert status["started-null"] == status["started-number"] == status["metrics-odd"] == status["metrics-list"] == "completed"
    assert not {"planted", "planted-link", "latest", "loop", "a-file", "run-json-is-a-folder"} & set(status)
    assert at.multiselect[0].options == ["medical"]  # the finance folder links out of the runs folder: not read
    # the detail of the newest run: its curves despite the damaged lines
    assert at.selectbox(key="detail_run").value.startswith("medical/curves")
    assert at.multiselect(key="detail_curves").value == ["loss"]


def test_a_runs_error_text_is_shown_as_text_not_markdown(damaged_runs):
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    label = next(o for o in at.selectbox(key="detail_run").options if "failed [click]" in o)
    at.selectbox(key="detail_run").set_value(label).run()
    _no_traceback(at)
    (err,) = [e.value for e in at.error]
    assert "\\[click\\]\\(http://evil\\.example\\)" in err and "\\<b\\>" in err and "\\$x^2\\$" in err, err
    label = next(o for o in at.selectbox(key="detail_run").options if o.startswith("medical/half-written"))
    at.selectbox(key="detail_run").set_value(label).run()
    _no_traceback(at)
    assert any("Damaged run folder" in w.value and "run\\.json" in w.value for w in at.warning), [w.value for w in at.warning]


def test_a_domain_page_refuses_a_run_whose_files_link_out_of_its_folder(tmp_path, monkeypatch):
    secret = tmp_path / "elsewhere" / "best.safetensors"
    secret.parent.mkdir()
    secret.write_bytes(b"not read")
    run = _run(tmp_path / "runs", "medical", "linked", task__json='{"task": "x"}')
    (run / "best.safetensors").symlink_to(secret)
    monkeypatch.setenv("SUITE_RUNS_DIR", str(tmp_path / "runs"))
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page("views/medical.py").run()
    _no_traceback(at)
    assert any("links to files outside its folder" in e.value and "best\\.safetensors" in e.value for e in at.error), [e.value for e in at.error]
    assert not at.radio  # stopped before any input is offered


def test_the_medical_page_says_a_run_without_its_model_holds_none(tmp_path, monkeypatch):
    _run(tmp_path / "runs", "medical", "no-model", task__json='{"task": "x"}')
    monkeypatch.setenv("SUITE_RUNS_DIR", str(tmp_path / "runs"))
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page("views/medical.py").run()
    _no_traceback(at)
    assert not at.error
    assert any("holds no trained model" in w.value for w in at.warning), [w.value for w in at.warning]
    assert "domains.medical.train" in at.code[0].value


def test_finance_tabs_say_which_column_a_damaged_table_lacks(domain_run, tmp_path, monkeypatch):
    src = domain_run("finance").run_dir
    run = tmp_path / "runs" / "finance" / "damaged"
    shutil.copytree(src, run, ignore=shutil.ignore_patterns("checkpoints"))
    for p in [*run.glob("*.csv"), *run.glob("*.parquet")]:
        df = pd.read_csv(p) if p.suffix == ".csv" else pd.read_parquet(p)
        df = df.drop(columns=[c for c in ("model", "cutoff", "date") if c in df])
        df.to_csv(p, index=False) if p.suffix == ".csv" else df.to_parquet(p)
    monkeypatch.setenv("SUITE_RUNS_DIR", str(tmp_path / "runs"))
    at = AppTest.from_file(APP, default_timeout=240)
    at.run()
    at.switch_page("views/finance.py").run()
    _no_traceback(at)
    errors = [e.value for e in at.error]
    assert any(e.startswith("Showing the backtest failed: metrics\\_aggregate\\.csv needs a \\`model\\` column") for e in errors), errors
    assert any(e.startswith("Showing the VaR breaches failed:") and "'date'" in e for e in errors), errors
    assert any(e.startswith("Showing the folds, regimes and tests failed:") and "'cutoff'" in e for e in errors), errors
    assert "Price history" in [t.label for t in at.tabs]  # the other tabs still render


def test_read_run_safely_never_raises(tmp_path):
    from dashboards.common import read_run_safely

    for i, text in enumerate(['[1]', '"s"', '{"a', "", '{"status": null, "started": 1, "metrics": 2}']):
        info = read_run_safely(_run(tmp_path, "medical", f"r{i}", text))
        assert isinstance(info["status"], str) and isinstance(info["metrics"], dict) and info["name"] == f"r{i}"
        assert info["started"] is None or isinstance(info["started"], str)


def test_damaged_benchmark_results_do_not_hide_the_runs_own_metrics(domain_run, tmp_path, monkeypatch):
    root = tmp_path / "runs"
    shutil.copytree(domain_run("recommendation").run_dir, root / "recommendation" / "run", ignore=shutil.ignore_patterns("checkpoints"))
    (root / "bench-recommendation").mkdir()
    (root / "bench-recommendation" / "stratified.json").write_text('{"rows": [{"model": "x", "ndcg@10": 0.1}], "seeds": ["a"]}')
    monkeypatch.setenv("SUITE_RUNS_DIR", str(root))
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page("views/recommendation.py").run()
    _no_traceback(at)
    assert [e.value for e in at.error if e.value.startswith("Reading the benchmark results under `")], [e.value for e in at.error]
    assert any("Test metrics of this run" in m.value for m in at.markdown)  # the run's own table is still shown
    assert any("model" in d.value.columns for d in at.dataframe)


def test_error_message_shows_a_users_lookup_error_as_its_own_line():
    """An item id the run does not know (``UnknownItemError``, a UserInputError that is also a KeyError for
    callers catching KeyError) was shown as "the run's files lack the column or field ..." — a damaged run."""
    from dashboards.common import error_message
    from domains.recommendation.inference import UnknownItemError

    msg = error_message(UnknownItemError("no item '03' in this run; did you mean '3'?"))
    assert msg == "no item '03' in this run; did you mean '3'?"
    assert "lack the column" in error_message(KeyError("rank"))  # a real missing column is still read as one
