"""Every dashboard page under Streamlit's AppTest: the no-runs state, the overview on real
``core.runs.Run`` runs, each domain page on a tiny run its own ``train(cfg)`` made, bad uploads."""

from __future__ import annotations

import gzip
import io
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from core.config import DeviceConfig, RunConfig, SeedConfig, TrackingConfig
from core.runs import Run
from dashboards import slices
from dashboards.common import COMMANDS, md_text, run_key, run_path
from dashboards.uploads import UploadError, check_upload

APP = str(Path(__file__).resolve().parents[2] / "dashboards" / "app.py")
PAGES = {"medical": "views/medical.py", "finance": "views/finance.py", "recommendation": "views/recommendation.py"}


def run_app(page: str | None = None, timeout: float = 60, run_dir: Path | None = None) -> AppTest:
    """The app (on ``page``); with ``run_dir``, that run picked in the sidebar (other tests of the
    session may have left newer runs in the shared runs root)."""
    at = AppTest.from_file(APP, default_timeout=timeout)
    at.run()
    if page:
        at.switch_page(page).run()
    if run_dir is not None:
        box = at.selectbox(key=f"{run_dir.parent.name}_run")
        wanted = next(o for o in box.options if o.startswith(f"{run_dir.name}  ·"))
        if box.value != wanted:
            box.set_value(wanted).run()
    return at


def no_exception(at: AppTest) -> None:
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def text_of(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [m.value for m in at.info] + [m.value for m in at.warning] + [m.value for m in at.caption]
    parts += [t.value for t in at.title] + [t.value for t in at.subheader] + [c.value for c in at.code]
    return "\n".join(str(p) for p in parts)


# ---- no runs at all ------------------------------------------------------------------------------
def test_every_page_explains_the_command_when_there_are_no_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("SUITE_RUNS_DIR", str(tmp_path / "empty"))
    at = run_app()
    no_exception(at)
    assert at.title[0].value == "Overview"
    assert "No runs under" in text_of(at)
    assert all(f"python -m domains.{d}.{COMMANDS[d]} --runs-dir {tmp_path / 'empty'}" in at.code[0].value for d in PAGES)
    for domain, page in PAGES.items():
        at.switch_page(page).run()
        no_exception(at)
        assert at.title[0].value == domain.capitalize()
        assert f"No trained run of the **{domain}** domain" in text_of(at)
        assert [c.value for c in at.code] == [f".venv/bin/python -m domains.{domain}.{COMMANDS[domain]} --runs-dir {tmp_path / 'empty'}"]


# ---- overview on real runs ------------------------------------------------------------------------
@dataclass
class CoreRunConfig(TrackingConfig, SeedConfig, DeviceConfig, RunConfig):
    pass


def _core_run(runs_dir, name: str, seed: int, losses: list[float], final: dict, domain: str = "medical") -> None:
    cfg = CoreRunConfig(name=name, runs_dir=str(runs_dir), seed=seed, device="cpu")
    with Run.start(domain, cfg) as run:
        for step, loss in enumerate(losses):
            run.log_metrics({"loss": loss}, step)
        run.finish(final)


def test_overview_lists_runs_compares_two_and_reads_mlflow(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    dice = {"alpha": 0.50, "beta": 0.75}
    _core_run(runs, "alpha", 0, [1.0, 0.6, 0.4], {"val_dice": dice["alpha"], "nested": {"auc": 0.7}})
    _core_run(runs, "beta", 1, [0.9, 0.5, 0.2], {"val_dice": dice["beta"], "nested": {"auc": 0.9}})
    _core_run(runs, "gamma", 0, [2.0, 1.0], {"pinball": 0.01}, domain="finance")
    monkeypatch.setenv("SUITE_RUNS_DIR", str(runs))
    at = run_app()
    no_exception(at)
    # one table per domain, each with its own metric columns
    tables = {tuple(sorted(d.value["run"])): d.value for d in at.dataframe if "run" in d.value.columns}
    med, fin = tables[("alpha", "beta")], tables[("gamma",)]
    assert set(med["status"]) == {"completed"} and sorted(med["val_dice"]) == [0.50, 0.75] and "nested.auc" in med
    assert "pinball" in fin and "val_dice" not in fin
    # comparison: B defaults to the other run of A's domain; B − A is computed, the seed difference shown
    name = lambda label: label.split("/", 1)[1].split("  ·", 1)[0]  # noqa: E731
    a_name, b_name = name(at.selectbox(key="cmp_a").value), name(at.selectbox(key="cmp_b").value)
    if a_name == "gamma":  # same-second start times: the finance run may sort first
        at.selectbox(key="cmp_a").set_value(next(o for o in at.selectbox(key="cmp_a").options if "alpha" in o)).run()
        a_name, b_name = "alpha", name(at.selectbox(key="cmp_b").value)
    assert {a_name, b_name} == {"alpha", "beta"}
    cmp = next(d.value for d in at.dataframe if "B − A" in d.value.columns).set_index("metric")
    assert cmp.loc["val_dice", "A"] == pytest.approx(dice[a_name]) and cmp.loc["val_dice", "B"] == pytest.approx(dice[b_name])
    assert cmp.loc["val_dice", "B − A"] == pytest.approx(dice[b_name] - dice[a_name])
    diff = next(d.value for d in at.dataframe if "setting" in d.value.columns)
    assert set(diff["setting"]) >= {"seed", "name"}
    # MLflow store: every run is there with its final metric
    ml = next(d.value for d in at.dataframe if "experiment" in d.value.columns)
    assert set(ml["run name"]) == {"alpha", "beta", "gamma"} and sorted(ml["metric.val_dice"].dropna()) == [0.50, 0.75]
    # swapping the two runs flips the sign
    at.selectbox(key="cmp_a").set_value(next(o for o in at.selectbox(key="cmp_a").options if b_name in o))
    at.selectbox(key="cmp_b").set_value(next(o for o in at.selectbox(key="cmp_b").options if a_name in o)).run()
    cmp = next(d.value for d in at.dataframe if "B − A" in d.value.columns).set_index("metric")
    assert cmp.loc["val_dice", "B − A"] == pytest.approx(dice[a_name] - dice[b_name])


def test_overview_shows_a_run_whose_writer_was_killed_as_interrupted(tmp_path, monkeypatch):
    """A real process starts a run and is SIGKILLed mid-way; the overview must not keep saying "running"."""
    runs = tmp_path / "runs"
    with Run.start("medical", CoreRunConfig(name="finished", runs_dir=str(runs), track=False), command="train") as run:
        run.finish({"val_dice": 0.5})
    code = (
        "import dataclasses, time\n"
        "from core.config import RunConfig, SeedConfig, TrackingConfig\n"
        "from core.runs import Run\n"
        "@dataclasses.dataclass\n"
        "class C(TrackingConfig, SeedConfig, RunConfig): pass\n"
        f"run = Run.start('medical', C(name='killed', runs_dir={str(runs)!r}, track=False), command='train').__enter__()\n"
        "run.log_metrics({'loss': 1.0}, 0)\n"
        "print('started', flush=True)\n"
        "time.sleep(120)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        assert proc.stdout.readline().strip() == "started"
        monkeypatch.setenv("SUITE_RUNS_DIR", str(runs))
        at = run_app()
        no_exception(at)
        table = next(d.value for d in at.dataframe if {"run", "status"} <= set(d.value.columns))
        assert dict(zip(table["run"], table["status"]))["killed"] == "running"  # while its writer lives
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    at.run()  # the same session: its cached listing must not keep "running"
    no_exception(at)
    table = next(d.value for d in at.dataframe if {"run", "status"} <= set(d.value.columns))
    assert dict(zip(table["run"], table["status"])) == {"killed": "interrupted", "finished": "completed"}
    assert any("1 run interrupted" in w.value and "`medical/killed`" in w.value for w in at.warning), [w.value for w in at.warning]


# ---- uploads --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name,data,message",
    [
        ("notes.txt", b"hello", "not a supported scan"),
        ("scan.nii.gz", b"plain text, not gzip", "not gzip-compressed"),
        ("scan.nii", b"x" * 400, "not a NIfTI file"),
        ("scan.nrrd", b"P6 not nrrd", "not an NRRD file"),
        ("slice.dcm", b"\0" * 200, "not a DICOM file"),
        ("series.zip", b"PK but broken", "not a valid ZIP"),
        ("empty.nii", b"", "is empty"),
    ],
)
def test_upload_checks_refuse_with_a_clear_message(name, data, message):
    with pytest.raises(UploadError, match=message):
        check_upload(name, data)


def test_upload_checks_accept_real_formats():
    import nibabel as nib

    img = nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4))
    raw = img.to_bytes()
    assert check_upload("a.nii", raw) == ".nii"
    assert check_upload("a.NII.GZ", gzip.compress(raw)) == ".nii.gz"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("s/1.dcm", b"x")
    assert check_upload("series.zip", buf.getvalue()) == ".zip"


def test_slice_overlay_blends_only_visible_classes():
    image = np.zeros((6, 5, 4), np.float32)
    mask = np.zeros((6, 5, 4), np.int16)
    mask[1:3, 1:3, 2] = 1
    mask[4, 4, 2] = 2
    colours = {1: "#ff0000", 2: "#00ff00"}
    rgb = slices.overlay(slices.take(image, "axial", 2), slices.take(mask, "axial", 2), colours, 1.0, (0.0, 1.0), visible={1})
    assert rgb.shape == (5, 6, 3)  # rot90 of a 6×5 slice
    assert (rgb.reshape(-1, 3) == [255, 0, 0]).all(axis=1).sum() == 4
    assert not (rgb.reshape(-1, 3) == [0, 255, 0]).all(axis=1).any()
    assert slices.foreground_centre(mask)[2] == 2
    assert len(set(slices.palette(40))) == 40


def test_run_path_undoes_run_key_even_for_a_folder_with_an_at_sign(tmp_path):
    run = tmp_path / "user@host" / "run-1"
    run.mkdir(parents=True)
    (run / "run.json").write_text("{}")
    assert run_path(run_key(run)) == str(run.resolve())
    assert run_path(run_key(tmp_path / "missing@dir")) == str((tmp_path / "missing@dir").resolve())


# ---- domain pages on tiny real runs ------------------------------------------------------------------
def test_medical_page_segments_a_prepared_case(domain_run):
    run = domain_run("medical")
    t0 = time.perf_counter()
    at = run_app(PAGES["medical"], timeout=240, run_dir=run.run_dir)
    first = time.perf_counter() - t0
    no_exception(at)
    body = text_of(at)
    assert "Slices of" in body and "Volumes" in body
    assert len(at.get("image")) >= 1, "no slice images"
    vols = next(d.value for d in at.dataframe if "volume (mL)" in d.value.columns)
    assert len(vols) >= 1 and (vols["volume (mL)"] >= 0).all()
    assert "label volume (mL)" in vols.columns and (vols["label volume (mL)"] >= 0).all()  # the case is labelled
    assert at.get("download_button"), "no mask download"
    # the chosen case is labelled (prepared tasks ship labels): Dice per structure in [0, 1]
    dice = next(d.value for d in at.dataframe if "Dice" in d.value.columns)
    assert len(dice) >= 1 and dice["Dice"].dropna().between(0, 1).all()
    # viewer controls rerun from the caches: much faster than the first load (model + inference)
    t0 = time.perf_counter()
    at.slider(key="med_opacity").set_value(0.8).run()
    rerun = time.perf_counter() - t0
    no_exception(at)
    assert rerun < 0.5 * first, (rerun, first)
    at.slider(key="med_axial").set_value(0).run()
    for mode in ("Label", "Errors vs label"):
        at.radio(key="med_overlay").set_value(mode).run()
        no_exception(at)
        assert any(mode in m.value for m in at.markdown) or "matches the label exactly" in text_of(at)


def test_medical_page_refuses_a_bad_upload_and_segments_a_good_one(domain_run):
    run = domain_run("medical")
    at = run_app(PAGES["medical"], timeout=240, run_dir=run.run_dir)
    at.radio(key="med_source").set_value("Upload a scan").run()
    at.file_uploader(key="med_upload").upload("brain.nii.gz", b"this is not a scan", "application/gzip")
    at.run()
    assert not at.exception
    assert any("Upload refused" in e.value and "not gzip-compressed" in e.value for e in at.error)
    # a well-formed file that is not a volume reaches the reader, which refuses it by name
    at.file_uploader(key="med_upload").upload("flat.nii", _nifti_bytes(np.zeros((8, 8), np.float32)), "application/octet-stream")
    at.run()
    assert not at.exception
    assert [e.value for e in at.error if "Upload refused: the uploaded scan: expected a 3D volume" in e.value], [e.value for e in at.error]
    # a real scan (a prepared case's image file) is segmented like a prepared case
    import domains.medical.api as med

    case = med.list_cases()[0]
    at.file_uploader(key="med_upload").upload(Path(case["image"]).name, Path(case["image"]).read_bytes(), "application/gzip")
    at.run()
    no_exception(at)
    assert "Slices of" in text_of(at)


def _nifti_bytes(arr: np.ndarray) -> bytes:
    import nibabel as nib

    return nib.Nifti1Image(arr, np.eye(4)).to_bytes()


def chart_titles(at: AppTest) -> list[str]:
    out = []
    for el in at.get("plotly_chart"):
        title = json.loads(el.proto.spec).get("layout", {}).get("title", {})
        out.append(title.get("text", "") if isinstance(title, dict) else str(title))
    return out


def test_finance_page_shows_prices_forecast_backtest(domain_run):
    run = domain_run("finance")
    trained = set(pd.read_parquet(run.run_dir / "predictions.parquet")["ticker"])
    at = run_app(PAGES["finance"], timeout=240, run_dir=run.run_dir)
    no_exception(at)
    chosen = at.multiselect(key="fin_tickers").value
    assert chosen and set(chosen) <= trained
    titles = chart_titles(at)
    # a next-days fan and a walk-forward fan per chosen ticker, VaR per ticker, a metric bar chart, importance
    for t in chosen:
        assert f"{t}: daily log return, forecast quantiles" in titles, titles
        assert any(x.startswith(f"{t} · tft: daily log return, 1 day(s) ahead") for x in titles), titles
        assert any(x.startswith(f"{t} · tft:") and "breaches in" in x for x in titles), titles
    assert any("by model" in x for x in titles) and any("variables" in x for x in titles), titles
    frames = [d.value for d in at.dataframe]
    agg = next(f for f in frames if "model" in f.columns and "vol_pinball" in f.columns and "ticker" not in f.columns)
    assert "tft" in set(agg["model"]) and len(set(agg["model"]) - {"tft"}) >= 1  # against baselines
    counts = next(f for f in frames if "expected rate" in f.columns)
    assert np.allclose(counts["expected rate"], 0.01) and (counts["breaches"] <= counts["days"]).all()
    # the volatility target and the 95% level redraw without errors
    at.radio(key="fin_target").set_value("rvol").run()
    no_exception(at)
    assert any("5-day realised volatility, forecast quantiles" in x for x in chart_titles(at))
    at.radio(key="fin_var_level").set_value("95").run()
    no_exception(at)
    counts = next(d.value for d in at.dataframe if "expected rate" in d.value.columns)
    assert np.allclose(counts["expected rate"], 0.05)


def test_recommendation_page_recommends_and_places_a_new_item(domain_run):
    run = domain_run("recommendation")
    at = run_app(PAGES["recommendation"], timeout=240, run_dir=run.run_dir)
    no_exception(at)

    def frame(*cols):
        return next(d.value for d in at.dataframe if set(cols) <= set(d.value.columns))

    user = at.selectbox(key="rec_user").value
    hist, top = frame("item_id", "title", "genres"), frame("item_id", "title", "genres", "score")
    assert len(hist) > 0 and len(top) == at.slider(key="rec_k").value == 10
    assert not set(top["item_id"]) & set(hist["item_id"]), "seen items recommended again"
    assert top["score"].is_monotonic_decreasing and top["title"].str.len().gt(0).all()
    at.slider(key="rec_k").set_value(5).run()
    no_exception(at)
    assert len(frame("item_id", "title", "genres", "score")) == 5
    at.selectbox(key="rec_user").select_index(3).run()
    assert at.selectbox(key="rec_user").value != user and f"Top-5 for user {at.selectbox(key='rec_user').value}" in text_of(at)
    # similar items: K neighbours, never the item itself
    item = at.selectbox(key="rec_item").value.split(" · ")[0]
    sims = [d.value for d in at.dataframe if "score" in d.value.columns and "title" in d.value.columns][1]
    assert len(sims) == at.slider(key="rec_k_items").value and item not in set(sims["item_id"].astype(str))
    # cold start: a typed title and genres reach the requested number of users
    # (a title with markdown, math and HTML in it is shown as typed: escaped, not rendered)
    at.text_input(key="rec_cold_title").input("A quiet `courtroom` [drama](http://x.test) for $5 <b>").run()
    at.multiselect(key="rec_cold_genres").set_value(["Drama"]).run()
    no_exception(at)
    assert r"«A quiet \`courtroom\` \[drama\]\(http://x\.test\) for \$5 \<b\>» would reach first" in text_of(at)
    reached = frame("user_id", "score")
    assert len(reached) == at.slider(key="rec_cold_k").value
    # metrics: the run's model against at least one baseline
    m = frame("model")
    assert len(m) >= 2 and any(c.startswith("ndcg") for c in m.columns)


def test_a_broken_run_gives_a_message_not_a_traceback(domain_run, tmp_path, monkeypatch):
    import shutil

    src = domain_run("recommendation").run_dir
    broken = tmp_path / "runs" / "recommendation" / "broken"
    shutil.copytree(src, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    monkeypatch.setenv("SUITE_RUNS_DIR", str(tmp_path / "runs"))
    at = run_app(PAGES["recommendation"], timeout=120)
    assert not at.exception, [e.message for e in at.exception]
    assert any(e.value.startswith("Loading the recommender failed:") for e in at.error), [e.value for e in at.error]


def test_a_domain_page_preselects_the_newest_run_that_holds_a_model(domain_run, tmp_path, monkeypatch):
    import shutil

    shutil.copytree(domain_run("recommendation").run_dir, tmp_path / "runs" / "recommendation" / "trained")
    _core_run(tmp_path / "runs", "report-only", 0, [1.0], {"n": 1}, domain="recommendation")  # newer, no model in it
    monkeypatch.setenv("SUITE_RUNS_DIR", str(tmp_path / "runs"))
    at = run_app(PAGES["recommendation"], timeout=120)
    no_exception(at)
    assert len(at.selectbox(key="recommendation_run").options) == 2
    assert at.selectbox(key="recommendation_run").value.startswith("trained")  # the older run, the one with a model


def test_finance_page_shows_data_warnings_dropped_tickers_and_the_calendar(domain_run, tmp_path, monkeypatch):
    """Issue 15.7/15.9: the run's data-quality warnings (counted per kind), tickers dropped or without
    test days, and the exchange calendar of the forecast dates are on the page."""
    import shutil

    run = tmp_path / "runs" / "finance" / "warned"
    shutil.copytree(domain_run("finance").run_dir, run)
    pd.DataFrame([{"ticker": "AAPL", "kind": "suspected_split", "date": "2020-08-31", "value": 0.25, "detail": "1:4 jump"},
                  {"ticker": "JPM", "kind": "stale_prices", "date": None, "value": 0.31, "detail": "31% zero returns"},
                  {"ticker": "JPM", "kind": "stale_prices", "date": None, "value": 0.2, "detail": "again"}]).to_csv(run / "data_warnings.csv", index=False)
    (run / "data_report.json").write_text(json.dumps({"warning_counts": {"suspected_split": 1, "stale_prices": 2}, "tickers_dropped_short": ["TINY"]}))
    folds = json.loads((run / "folds.json").read_text()) if (run / "folds.json").is_file() else [{"fold": 0}]
    folds[0]["without_test_days"] = ["NEWCO"]
    (run / "folds.json").write_text(json.dumps(folds))
    monkeypatch.setenv("SUITE_RUNS_DIR", str(tmp_path / "runs"))
    at = run_app(PAGES["finance"], timeout=240)
    no_exception(at)
    warning = next(w.value for w in at.warning if "Data quality" in w.value)
    assert "3 warnings (1 suspected split, 2 stale prices)" in warning and "2 ticker(s) dropped or without test days" in warning
    dropped = next(d.value for d in at.dataframe if "reason" in d.value.columns)
    assert dict(zip(dropped["ticker"], dropped["reason"])) == {"TINY": "history shorter than --min-history; dropped",
                                                               "NEWCO": "no test days in fold(s) 0"}
    assert any(set(d.value.columns) >= {"ticker", "kind", "detail"} and len(d.value) == 3 for d in at.dataframe)
    assert any("sessions of the **XNYS** exchange calendar" in c.value for c in at.caption), [c.value for c in at.caption]
    # clean prices, one ticker without test days: the banner says so plainly (not "0 warnings (0 warnings)"); a new run
    # folder, as the page caches what it read per run
    clean = run.parent / "clean"
    shutil.copytree(run, clean)
    pd.DataFrame(columns=["ticker", "kind", "date", "value", "detail"]).to_csv(clean / "data_warnings.csv", index=False)
    (clean / "data_report.json").write_text(json.dumps({"warning_counts": {"suspected_split": 0, "stale_prices": 0}, "tickers_dropped_short": []}))
    at = run_app(PAGES["finance"], timeout=240, run_dir=clean)
    no_exception(at)
    warning = next(w.value for w in at.warning if "Data quality" in w.value)
    assert "raised no warnings; 1 ticker(s) dropped or without test days" in warning, warning


def test_finance_page_says_which_variant_a_transfer_run_saved(domain_run, tmp_path, monkeypatch):
    """A transfer run (a model, no backtest tables): the page names the saved variant and the
    validation figures ``--save auto`` chose it by."""
    import shutil

    src = domain_run("finance").run_dir
    run = tmp_path / "runs" / "finance" / "transfer-KO"
    run.mkdir(parents=True)
    shutil.copytree(src / "model", run / "model")
    for name in ("run.json", "config.json", "metrics.json"):  # a finished run with a model and no backtest tables
        if (src / name).is_file():
            shutil.copy(src / name, run / name)
    meta = json.loads((run / "model" / "forecaster.json").read_text())
    meta["info"].update(transfer="zero_shot", transfer_selection={"zero_shot": 0.00157, "finetune_full": 0.00164, "finetune_lora": 0.0017}, transfer_val_days=50)
    (run / "model" / "forecaster.json").write_text(json.dumps(meta))
    monkeypatch.setenv("SUITE_RUNS_DIR", str(tmp_path / "runs"))
    at = run_app(PAGES["finance"], timeout=240)
    no_exception(at)
    assert any("no backtest tables" in i.value for i in at.info), ([i.value for i in at.info], [e.value for e in at.error], [w.value for w in at.warning], [b.options for b in at.selectbox])
    assert any("No variable importance for this run" in i.value for i in at.info)  # a run without a backtest: information, not an error
    caption = next(c.value for c in at.caption if "transfer run" in c.value)
    assert "**zero\\_shot**" in caption and "finetune\\_lora 0.0017" in caption and "--save auto" in caption and "last 50 days" in caption


def test_recommendation_fallback_rows_show_a_labelled_popularity_column_not_a_score(domain_run):
    """Issue 16.7: a user the model cannot score gets the most popular items, their training counts
    under their own label, and the reason."""
    run = domain_run("recommendation")
    at = run_app(PAGES["recommendation"], timeout=240, run_dir=run.run_dir)
    at.text_input(key="rec_user_typed").input("no-such-user").run()
    no_exception(at)
    assert any(i.value == "Fallback: unknown user: most popular items." for i in at.info), [i.value for i in at.info]
    top = next(d.value for d in at.dataframe if "popularity (training interactions)" in d.value.columns)
    assert "score" not in top.columns and len(top) == 10
    pop = top["popularity (training interactions)"]
    assert pop.is_monotonic_decreasing and (pop > 0).all() and (pop == pop.round()).all()
    # a known user's list is the model's: a score column, no popularity column
    at.text_input(key="rec_user_typed").input("").run()
    top = next(d.value for d in at.dataframe if "score" in d.value.columns and "title" in d.value.columns)
    assert "popularity (training interactions)" not in top.columns and top["score"].notna().all()


def test_medical_page_shows_the_out_of_distribution_verdict_with_its_reasons(domain_run):
    """Issue 14.5: the guard's flag and reasons reach the page (the same verdict the API gives)."""
    import domains.medical.api as med

    run = domain_run("medical")
    at = run_app(PAGES["medical"], timeout=240, run_dir=run.run_dir)
    no_exception(at)
    case = next(c for c in med.list_cases() if c.id in at.selectbox(key="med_case").value)
    verdict = med.load_segmenter(run.run_dir).predict(case.image).ood
    if verdict is None:
        pytest.skip("this checkout's medical domain has no out-of-distribution guard yet")
    flagged = [w.value for w in at.warning if "Out of distribution" in w.value]
    if verdict.flagged:  # a barely trained model: its volumes are usually far outside adult ranges
        assert len(flagged) == 1 and all(r in flagged[0] for r in verdict.reasons), (flagged, verdict)
    else:
        assert not flagged and any("within the expected ranges" in c.value for c in at.caption)


def test_recommendation_page_shows_seed_spread_validation_curve_and_chosen_epoch(domain_run, tmp_path, monkeypatch):
    """Issue 16.8: the benchmark's mean ± sd over seeds next to the baselines, the validation curve
    and the epoch early stopping chose."""
    import shutil

    import domains.recommendation.api as rec_api

    runs = tmp_path / "runs"
    shutil.copytree(domain_run("recommendation").run_dir, runs / "recommendation" / "trained")
    bench = runs / rec_api.BENCH_DIR
    bench.mkdir(parents=True)
    rows = [{"model": m, "seed": s, "ndcg@10": base + d, "recall@10": 0.2, "valid_ndcg@10": 0.3, "params": {}}
            for m, base in (("two_tower", 0.47), ("ease", 0.45)) for s, d in ((0, -0.01), (1, 0.0), (2, 0.01))]
    (bench / "stratified.json").write_text(json.dumps({"rows": rows, "seeds": [0, 1, 2], "quick": False}))
    monkeypatch.setenv("SUITE_RUNS_DIR", str(runs))
    at = run_app(PAGES["recommendation"], timeout=240)
    no_exception(at)
    spread = next(d.value for d in at.dataframe if "ndcg@10" in d.value.columns and d.value["ndcg@10"].astype(str).str.contains("±").all())
    assert dict(zip(spread["model"], spread["ndcg@10"])) == {"two_tower": "0.4700 ± 0.0100", "ease": "0.4500 ± 0.0100"}
    bar = next(json.loads(el.proto.spec) for el in at.get("plotly_chart") if "by model" in json.dumps(json.loads(el.proto.spec).get("layout", {}).get("title", "")))
    names = [t.get("name") for t in bar["data"]]
    assert "benchmark: mean ± sd over 3 seeds" in names
    rep = rec_api.training_report(runs / "recommendation" / "trained")
    if rep.chosen_epoch is None:
        assert "This run logged no validation metrics." in text_of(at) or not rep.curves.empty
    else:
        assert f"Early stopping chose epoch **{rep.chosen_epoch}**" in text_of(at)
        charts = [el.proto.spec for el in at.get("vega_lite_chart")]
        assert charts and all('"type": "rule"' in spec for spec in charts)  # every curve, with the chosen epoch marked


def test_a_domain_page_offers_model_runs_not_jobs(domain_run, tmp_path, monkeypatch):
    """Jobs (score, forecast, ...) are runs of kind "job" holding no model: the page's picker leaves them out."""
    import shutil

    shutil.copytree(domain_run("recommendation").run_dir, tmp_path / "runs" / "recommendation" / "trained")
    with Run.start("recommendation", CoreRunConfig(name="a-score-job", runs_dir=str(tmp_path / "runs"), track=False), command="score", kind="job") as run:
        run.finish({"n": 1})
    monkeypatch.setenv("SUITE_RUNS_DIR", str(tmp_path / "runs"))
    at = run_app(PAGES["recommendation"], timeout=120)
    no_exception(at)
    assert [o.split("  ·")[0] for o in at.selectbox(key="recommendation_run").options] == ["trained"]


@pytest.mark.parametrize("domain", list(PAGES))
def test_a_page_whose_domain_cannot_be_imported_says_so(domain, tmp_path, monkeypatch):
    """The "domain not installed" state: a run exists, but domains/<d>/api.py cannot be imported."""
    runs = tmp_path / "runs"
    with Run.start(domain, CoreRunConfig(name="some-run", runs_dir=str(runs), track=False), command="train") as run:
        run.finish({"n": 1})
    monkeypatch.setenv("SUITE_RUNS_DIR", str(runs))
    monkeypatch.setitem(sys.modules, f"domains.{domain}.api", None)  # `from domains.<d> import api` raises ImportError...
    if f"domains.{domain}" in sys.modules:  # ...also when an earlier test imported it (the package then has the attribute)
        monkeypatch.delattr(sys.modules[f"domains.{domain}"], "api", raising=False)
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.switch_page(PAGES[domain]).run()
    assert not at.exception, [e.message for e in at.exception]
    assert any(f"The {domain} domain is not available here: `domains/{domain}/api.py` cannot be imported" in w.value for w in at.warning), \
        [w.value for w in at.warning]


def test_finance_page_shows_folds_regimes_and_the_statistical_tests(domain_run):
    """Issue 15.1/15.4 as the backtest writes them: per-fold and per-regime metrics, Diebold–Mariano
    tests against every baseline, the pooled VaR/ES backtests and the seeds."""
    import domains.finance.api as fin

    run = domain_run("finance")
    bt = fin.load_backtest(run.run_dir)
    if bt.by_fold.empty:
        pytest.skip("this checkout's finance backtest writes no per-fold tables")
    at = run_app(PAGES["finance"], timeout=240, run_dir=run.run_dir)
    no_exception(at)
    titles = chart_titles(at)
    assert any(t.startswith("vol_pinball per walk-forward fold") for t in titles), titles
    if not bt.by_regime.empty:
        assert any(t.startswith("vol_pinball by regime") for t in titles), titles
    frames = [d.value for d in at.dataframe]
    if not bt.diebold_mariano.empty:
        dm = next(f for f in frames if "p_tft_better" in f.columns)
        assert set(dm["baseline"]) == set(bt.diebold_mariano["baseline"]) and dm["p_tft_better"].between(0, 1).all()
    at.selectbox(key="fin_reg_metric").set_value("vol_qlike").run()
    no_exception(at)
    assert any(t.startswith("vol_qlike per walk-forward fold") for t in chart_titles(at))


def test_medical_page_switches_largest_component_post_processing(domain_run):
    """Issue 14.4 on the page: keeping each structure's largest connected component never adds voxels."""
    run = domain_run("medical")
    at = run_app(PAGES["medical"], timeout=240, run_dir=run.run_dir)
    no_exception(at)
    before = next(d.value for d in at.dataframe if "volume (mL)" in d.value.columns).set_index("structure")["volume (mL)"]
    at.toggle(key="med_lcc").set_value(True).run()
    no_exception(at)
    after = next(d.value for d in at.dataframe if "volume (mL)" in d.value.columns).set_index("structure")["volume (mL)"]
    assert list(after.index) == list(before.index) and (after <= before + 1e-9).all()


def test_recommendation_top_k_says_because_you_watched(domain_run):
    """Issue 17.3 in the user view: each recommendation names the history items behind it."""
    import domains.recommendation.api as rec_api

    run = domain_run("recommendation")
    at = run_app(PAGES["recommendation"], timeout=240, run_dir=run.run_dir)
    no_exception(at)
    user = at.selectbox(key="rec_user").value
    top = next(d.value for d in at.dataframe if "because you watched" in d.value.columns)
    why = rec_api.because_you_watched(rec_api.load_recommender(run.run_dir), user, k=10, top=3)
    assert len(top) == 10 and top["because you watched"].str.len().gt(0).any()
    assert dict(zip(top["item_id"], top["because you watched"])) == {i: rec_api.because_summary(why).get(i, "") for i in top["item_id"]}
    history = set(next(d.value for d in at.dataframe if "title" in d.value.columns and "score" not in d.value.columns)["title"])
    named = {t.strip() for s in top["because you watched"] for t in s.rstrip("…").split(";") if t.strip()}
    assert named and all(any(h.startswith(t) for h in history) for t in named)  # only the user's own history is named


def test_finance_page_attributes_the_latest_var_forecast(domain_run):
    """Issue 17.3 on the finance page: the latest 99 % VaR's attribution by input and by past day."""
    run = domain_run("finance")
    at = run_app(PAGES["finance"], timeout=240, run_dir=run.run_dir)
    no_exception(at)
    t = at.selectbox(key="fin_attr_ticker").value
    titles = chart_titles(at)
    assert f"{t}: VaR attribution by input (red: raises the VaR)" in titles and f"{t}: VaR attribution by past day" in titles, titles
    assert any(c.value.startswith(f"{t}: 1-day 99 % VaR for") for c in at.caption)


def test_medical_page_overlays_a_structures_occlusion_sensitivity(domain_run):
    """Issue 17.3 on the medical page: the selected structure's saliency drawn over the slices."""
    pytest.importorskip("domains.medical.explain", reason="this checkout has no medical explanation module")
    run = domain_run("medical")
    at = run_app(PAGES["medical"], timeout=240, run_dir=run.run_dir)
    no_exception(at)
    plain = [str(el.proto) for el in at.get("image")]
    structure = at.selectbox(key="med_explain").options[1]
    at.selectbox(key="med_explain").set_value(structure).run()
    no_exception(at)
    assert any(c.value.startswith(f"Explaining **{md_text(structure)}**: occlusion") for c in at.caption), [c.value for c in at.caption]
    assert len(at.get("image")) == len(plain) >= 1 and [str(el.proto) for el in at.get("image")] != plain  # the slices were redrawn
