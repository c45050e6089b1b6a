"""A runs folder whose path holds characters that mean something in a URL: with a space, '#' or non-ASCII MLflow
tracking works and its store is inside the folder; with '%' or '?' (which a SQLite tracking URI cannot hold) tracking
is off at once with one warning — not after 90 s of retries, and no store written beside the runs folder."""

import time

from core.tracking import Tracker


def test_tracking_in_a_runs_folder_with_url_characters(tmp_path, caplog):
    ok = tmp_path / "my runs ü #1"
    t = Tracker(experiment="unit", run_name="r1", runs_dir=ok, enabled=True, tags={})
    t.log_metrics({"m": 1.0}, step=0)
    t.end("FINISHED")
    assert t.enabled and t.run_id and (ok / "mlflow.db").is_file()

    for name in ("runs%20x", "runs?x"):
        t0 = time.monotonic()
        t = Tracker(experiment="unit", run_name="r1", runs_dir=tmp_path / name, enabled=True, tags={})
        t.log_metrics({"m": 1.0}, step=0)
        t.end("FINISHED")
        assert not t.enabled and time.monotonic() - t0 < 5
        assert "contains '%' or '?'" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == [ok.name]  # no store (or its lock) beside the runs folders


def test_a_store_error_during_a_run_is_one_warning_line_without_sql(tmp_path, caplog, capfd):
    """A store that breaks under a running run (here its metrics table is gone; a locked or damaged database does
    the same): the run goes on with tracking off and ONE warning line naming the cause — MLflow's own ERROR log
    with the SQL statement, its parameters and a traceback is not printed."""
    import sqlite3

    t = Tracker(experiment="unit", run_name="r1", runs_dir=tmp_path, enabled=True, tags={})
    assert t.enabled and t.run_id
    with sqlite3.connect(tmp_path / "mlflow.db") as c:
        c.execute("DROP TABLE metrics")
    caplog.clear()
    t.log_metrics({"m": 1.0}, step=1)
    t.log_metrics({"m": 2.0}, step=2)  # already off: no second warning
    assert not t.enabled
    warnings = [r.getMessage() for r in caplog.records if r.levelname in ("WARNING", "ERROR")]
    assert len(warnings) == 1 and "\n" not in warnings[0], warnings
    assert "no such table: metrics" in warnings[0] and "[SQL:" not in warnings[0]
    assert "Traceback" not in capfd.readouterr().err
