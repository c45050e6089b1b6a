"""``python -m domains.finance.score`` forecasts the tickers of each chunk in one batched forward, in
the worker that scores that chunk (``TFTScorer.prepare_chunk``), not one TFT forward per work item
(~0.2 s of op overhead each on an idle core, >1 s on the busy 2-core machine) nor one over the whole
panel in every worker at load (what a resumed job and every extra worker repeated). The rows are
exactly those of ``forecast`` for the same tickers, the per-item path's within float32 rounding, and
bit-identical between an uninterrupted job and a resumed one; unknown and short tickers are still
quarantined one by one. Tiny untrained GARCH-informed model on a slice of the bundled real panel: fast."""

from __future__ import annotations

import copy
import numpy as np
import pandas as pd
import pytest
import torch

from core.scoring import WorkItem, output_checksum, read_output, read_quarantine, run_job
from core.scoring.job import read_job, score_chunk
from domains.finance import predictor
from domains.finance.data import load_panel_data
from domains.finance.features import CORE_REALS, FoldScaler, base_features
from domains.finance.model import Forecaster, TFTSpec, build_tft
from domains.finance.scoring import TFTScorer
from tests.finance_support import panel_slice

SPEC = TFTSpec(encoder_length=20, horizon=3, hidden_size=8, attention_heads=1, hidden_continuous_size=4, observed_reals=tuple(CORE_REALS) + ("gjr_z",))
KNOWN = ["AAPL", "JPM", "KO", "SP500", "PG"]


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """(model run folder, price file): a model of KNOWN and MSFT; the file also holds XOM (unknown to
    it) and only 18 days of MSFT (< encoder_length 20, kept with --min-history 10)."""
    root = tmp_path_factory.mktemp("score_batched")
    p = panel_slice(KNOWN + ["XOM"], "2019-01-01", "2020-06-30")
    short = panel_slice(["MSFT"], "2020-06-05", "2020-06-30")
    prices = root / "prices.csv"
    pd.concat([p, short])[["date", "ticker", "close"]].to_csv(prices, index=False)
    d = load_panel_data(str(prices), min_history=10)
    feat = base_features(d.panel[d.panel["ticker"] != "XOM"])
    gjr = {t: [0.05, 0.02, 0.05, 0.1, 0.85, 8.0] for t in KNOWN + ["MSFT"]}  # fixed GJR-GARCH-t (mu, omega, alpha, gamma, beta, nu): no fits
    torch.manual_seed(0)
    Forecaster(build_tft(SPEC, KNOWN + ["MSFT"]), SPEC, FoldScaler.fit(feat).with_gjr(gjr, SPEC.horizon), KNOWN + ["MSFT"]).save(root / "run" / "model")
    return root / "run", prices


def _scored(scorer, tickers):
    """What the engine does with one chunk of ``tickers``: prepare it, then score item by item."""
    items = [WorkItem(id=t) for t in tickers]
    scorer.prepare_chunk(items)
    out, why = {}, {}
    for it in items:
        try:
            out[it.id] = scorer.score(it)
        except Exception as e:  # noqa: BLE001 - what the engine quarantines
            why[it.id] = str(e)
    return out, why


@pytest.fixture
def forwards(monkeypatch):
    """The tickers of every batched TFT forward, one list per forward."""
    calls: list[list[str]] = []
    real = predictor.rows_from_origins
    monkeypatch.setattr(predictor, "rows_from_origins", lambda fc, T, o: calls.append(sorted(T.tickers[o])) or real(fc, T, o))
    return calls


def test_a_chunk_is_one_forward_of_its_tickers_and_matches_the_per_item_path_and_forecast(job, forwards):
    run, prices = job
    scorer = TFTScorer(str(run), str(prices), data_options={"min_history": 10})
    scorer.load()
    assert forwards == []  # loading forecasts nothing: each chunk forecasts its own tickers
    chunk = ["AAPL", "JPM", "KO", "XOM", "MSFT", "NOPE"]
    got, why = _scored(scorer, chunk)
    assert forwards == [["AAPL", "JPM", "KO"]]  # one forward, of this chunk's forecastable tickers only
    assert sorted(got) == ["AAPL", "JPM", "KO"]
    assert "unknown to the model" in why["XOM"] and "fewer than 20 days" in why["MSFT"] and "no prices" in why["NOPE"]
    assert scorer.load_info() == {"tickers_forecast": 3, "batched_forwards": 1}

    # the per-item path of before: one origin per forward
    d = load_panel_data(str(prices), min_history=10)
    model = Forecaster.load(run / "model")  # not zero-shot: prepare_forecaster and forecast_frame leave it as it is
    fc, feat = predictor.prepare_forecaster(model, d.panel, d.covariates)
    T, o = predictor.latest_tensors(fc, feat)
    for t in ["AAPL", "JPM", "KO"]:
        one = predictor.with_calendars(predictor.rows_from_origins(fc, T, [o[T.tickers[o] == t][0]]))
        q = [c for c in one.columns if c.startswith("q_")]
        pd.testing.assert_frame_equal(got[t].drop(columns=q), one.drop(columns=q), check_exact=True)
        np.testing.assert_allclose(got[t][q].to_numpy(), one[q].to_numpy(), rtol=1e-6, atol=1e-7)  # float32 rounding: batch size changes the last bits
        assert len(got[t]) == 2 * SPEC.horizon and not got[t].isna().any().any()
    # and exactly what `forecast` writes for the same tickers
    ref = predictor.forecast_frame(model, d.panel, d.covariates, ["AAPL", "JPM", "KO"])
    pd.testing.assert_frame_equal(pd.concat([got[t] for t in ["AAPL", "JPM", "KO"]], ignore_index=True), ref, check_exact=True)
    with pytest.raises(RuntimeError, match="not in the chunk prepared last"):
        scorer.score(WorkItem(id="SP500"))  # never by the engine: it prepares every chunk


def test_a_resumed_job_forecasts_only_the_missing_chunks_and_writes_the_same_rows(job, tmp_path, forwards):
    """A score job killed after its first chunks: the identical rerun forecasts only the tickers of the chunks
    without a commit marker (it forecast the whole panel again before), and its output is the uninterrupted
    job's, bit for bit."""
    import shutil

    run, prices = job
    items = [WorkItem(id=t, meta={"kind": "ticker"}) for t in ["AAPL", "JPM", "XOM", "KO", "SP500"]]

    def job_run(out):
        return run_job(items, TFTScorer(str(run), str(prices), data_options={"min_history": 10}), out, items_per_chunk=2, progress=False)

    whole = job_run(tmp_path / "whole")
    assert forwards == [["AAPL", "JPM"], ["KO"], ["SP500"]] and whole.chunks_done == 3
    cut = tmp_path / "cut"
    shutil.copytree(tmp_path / "whole", cut)
    (cut / "_done" / "chunk-000002.json").unlink()  # as if SIGKILLed between writing chunk 2's part and its commit marker
    (cut / "_SUCCESS.json").unlink()
    forwards.clear()
    again = job_run(cut)
    assert forwards == [["SP500"]]  # only the missing chunk's tickers (the whole panel again before)
    assert (again.chunks_done, again.chunks_skipped) == (1, 2)
    assert output_checksum(cut) == output_checksum(tmp_path / "whole")
    for i in range(3):
        assert (cut / f"part-00000{i}.parquet").read_bytes() == (tmp_path / "whole" / f"part-00000{i}.parquet").read_bytes()
    assert list(read_quarantine(cut)["item_id"]) == ["XOM"]
    assert read_job(cut)["description"]["scorer"]["version"] == TFTScorer.version == "4"
    assert set(read_output(cut)["ticker"]) == {"AAPL", "JPM", "KO", "SP500"}


def test_each_worker_forecasts_only_the_chunks_it_scores(job, forwards):
    """Two workers (as two processes of ``--workers 2`` or two Ray actors would) load the same scorer and each
    get other chunks: each forward holds only the tickers of the chunk being scored, and a chunk's rows are the
    same whichever worker scored it or what it scored before."""
    run, prices = job
    a = TFTScorer(str(run), str(prices), data_options={"min_history": 10})
    a.load()
    b = copy.deepcopy(a)  # a second worker's loaded scorer (loading it again costs seconds and shows nothing more)
    c0, c1 = [WorkItem(id="AAPL"), WorkItem(id="JPM")], [WorkItem(id="KO"), WorkItem(id="SP500")]
    r0, r1 = score_chunk(a, 0, c0), score_chunk(b, 1, c1)
    assert forwards == [["AAPL", "JPM"], ["KO", "SP500"]]
    assert a.load_info()["tickers_forecast"] == 2 and b.load_info()["tickers_forecast"] == 2
    assert bytes(score_chunk(b, 0, c0).part) == bytes(r0.part) and bytes(score_chunk(a, 1, c1).part) == bytes(r1.part)


def test_a_scored_frame_is_a_copy(job):
    """The engine inserts a lineage column into what ``score`` returns: the next score of the ticker
    (a rerun chunk) must not see it."""
    run, prices = job
    scorer = TFTScorer(str(run), str(prices), data_options={"min_history": 10})
    scorer.load()
    scorer.prepare_chunk([WorkItem(id="KO")])
    first = scorer.score(WorkItem(id="KO"))
    first.insert(0, "_work_item", "KO")
    again = scorer.score(WorkItem(id="KO"))
    assert "_work_item" not in again.columns
    pd.testing.assert_frame_equal(first.drop(columns="_work_item"), again)


@pytest.mark.slow
def test_workers_local_and_ray_split_the_forecasting_and_write_the_one_worker_bytes(job, tmp_path, ray_address):
    """Real worker processes (local × 2, forked from the fork server that imported pytorch-forecasting once) and
    Ray actors: over all workers each forecastable ticker is forecast once (each worker forecast the whole panel
    before), and the parts are the one-worker job's, byte for byte."""
    run, prices = job
    items = [WorkItem(id=t, meta={"kind": "ticker"}) for t in ["AAPL", "JPM", "XOM", "KO", "SP500", "PG"]]
    runs = {}
    for engine, workers in [("local", 1), ("local", 2), ("ray", 2)]:
        out = tmp_path / f"{engine}{workers}"
        s = run_job(items, TFTScorer(str(run), str(prices), data_options={"min_history": 10}), out, engine=engine, workers=workers, items_per_chunk=2,
                    address=ray_address if engine == "ray" else None, progress=False)
        assert sum(info["tickers_forecast"] for info in s.worker_load_info.values()) == 5, (engine, workers, s.worker_load_info)
        assert s.items_quarantined == 1  # XOM
        runs[(engine, workers)] = {p.name: p.read_bytes() for p in sorted(out.glob("part-*.parquet"))}
    assert len(runs[("local", 1)]) == 3 and runs[("local", 2)] == runs[("local", 1)] == runs[("ray", 2)]


def test_the_score_driver_refuses_a_cut_weights_file_without_building_the_model(job, tmp_path, monkeypatch, capsys):
    """The driver of ``score`` reads the model's description and weights only (its workers build the model, so it
    no longer pays the pytorch-forecasting import first), yet a cut weights file is still one line, exit 2,
    before any job run folder."""
    import json
    import shutil

    from domains.finance.score import main

    run, prices = job
    model = tmp_path / "m"
    shutil.copytree(run, model)
    (model / "run.json").write_text(json.dumps({"domain": "finance", "kind": "model", "command": "train", "status": "completed"}))
    weights = model / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:500])
    monkeypatch.setattr(Forecaster, "load", lambda *a, **k: pytest.fail("the driver built the model"))
    runs = tmp_path / "runs"
    assert main(["--model-run", str(model), "--runs-dir", str(runs), "--data", str(prices), "--min-history", "10", "--no-track", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot read safetensors file" in err[0] and str(weights) in err[0]
    assert not (runs / "finance").exists()



def _score_cli(run, tmp_path, calendar, caplog):
    """``python -m domains.finance.score --calendar CALENDAR`` on AAPL, KO and XOM (unknown to the model) of the job's
    prices: (rows, metrics.json, data_warnings.csv, the 'is closed' warnings logged)."""
    import json
    import logging
    import shutil

    from domains.finance.score import main

    model = tmp_path / "m"
    if not model.exists():
        shutil.copytree(run[0], model)
        (model / "run.json").write_text(json.dumps({"domain": "finance", "kind": "model", "command": "train", "status": "completed"}))
    runs = tmp_path / "runs"
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert main(["--model-run", str(model), "--runs-dir", str(runs), "--data", str(run[1]), "--min-history", "10", "--no-track",
                     "--no-progress", "--calendar", calendar, "--name", f"s-{calendar}", "--tickers", "AAPL", "KO", "XOM"]) == 0
    out = runs / "finance" / f"s-{calendar}"
    return (read_output(out / "scores"), json.loads((out / "metrics.json").read_text()), pd.read_csv(out / "data_warnings.csv"),
            [r.getMessage() for r in caplog.records if "is closed" in r.getMessage()])


def test_score_rows_and_record_name_the_calendars_as_forecast_does(job, tmp_path, caplog):
    """``score`` writes forecast's rows, ``calendar`` column included, and records the calendars used (``auto``
    resolved: XNYS for these US tickers) with the setting beside them, as ``forecast`` does (it wrote no such
    column and recorded ``calendar: auto``)."""
    rows, metrics, warned, _ = _score_cli(job, tmp_path, "auto", caplog)
    d = load_panel_data(str(job[1]), min_history=10)
    ref = predictor.forecast_frame(Forecaster.load(job[0] / "model"), d.panel, d.covariates, ["AAPL", "KO"])
    pd.testing.assert_frame_equal(rows.drop(columns="work_item"), ref, check_exact=True)
    assert set(rows["calendar"]) == {"XNYS"} and metrics["calendar"] == "XNYS" and metrics["calendar_setting"] == "auto"
    assert warned.empty and "data/warnings/calendar_mismatch" not in metrics  # their own calendar: no calendar_mismatch


def test_score_warns_a_history_off_its_calendar_once_in_the_driver(job, tmp_path, caplog):
    """``score`` runs forecast's calendar_mismatch check, once per job in the driver (score never warned): US histories
    on Tokyo's calendar trade on its holidays, one warning per forecastable ticker in data_warnings.csv, metrics and
    the log; XOM, unknown to the model, is not forecast and not checked (with each ticker's own calendar: nothing, above)."""
    rows, metrics, warned, logged = _score_cli(job, tmp_path, "XTKS", caplog)
    assert set(rows["calendar"]) == {"XTKS"} and metrics["calendar"] == "XTKS"
    assert sorted(warned.loc[warned["kind"] == "calendar_mismatch", "ticker"]) == ["AAPL", "KO"] and metrics["data/warnings/calendar_mismatch"] == 2
    assert len(logged) == 2 and all("XTKS is closed" in m and "--calendar" in m for m in logged)
