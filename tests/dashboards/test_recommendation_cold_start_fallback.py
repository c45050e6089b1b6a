"""The cold-start tab on a run whose user table lists users without training history: the api gives such a user an empty
rank (pandas NA) with ``fallback``/``reason`` (11331ce: its list is the popularity list, where a new item has no place).
The page dropped both columns and showed the empty rank as a blank cell, with nothing saying why; it now reads '—' with
the reason beside it, and the caption counts those users. A tiny shop run of 30 buyers and two users with no order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[2] / "dashboards" / "app.py")
GHOSTS = ("ghost1", "ghost2")  # in shop.user, in no interaction


@pytest.fixture(scope="module")
def ghost_runs(tmp_path_factory) -> Path:
    from domains.recommendation.train import main as train

    tmp = tmp_path_factory.mktemp("cold-start-fallback")
    folder = tmp / "shop"
    folder.mkdir()
    rng = np.random.default_rng(0)
    cats = ["Shirts", "Mugs", "Lamps"]
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    for u in range(30):
        for t, i in enumerate(rng.choice([i for i in range(30) if i % 3 == u % 3], 6, replace=False)):
            lines.append(f"c{u}\tP{i}\t{1000 * u + t}")
    (folder / "shop.inter").write_text("\n".join(lines) + "\n")
    (folder / "shop.item").write_text("\n".join(["item_id:token\ttitle:token_seq\tcategories:token_seq"] +
                                                [f"P{i}\t{cats[i % 3]} {i}\t{cats[i % 3]}" for i in range(30)]) + "\n")
    (folder / "shop.user").write_text("\n".join(["user_id:token\tage:float\tgender:token"] +
                                                [f"{u}\t{20 + n % 40}\t{'MF'[n % 2]}" for n, u in enumerate([f"c{i}" for i in range(30)] + list(GHOSTS))]) + "\n")
    runs = tmp / "runs"
    assert train(["--runs-dir", str(runs), "--no-track", "--data", str(folder), "--name", "shop", "--no-wide", "--text", "none",
                  "--no-baselines", "--epochs", "1", "--batch-size", "32", "--validation-ratio", "0", "--seed", "0"]) == 0
    return runs


def test_a_user_without_history_reads_no_rank_with_the_reason(ghost_runs, monkeypatch):
    monkeypatch.setenv("SUITE_RUNS_DIR", str(ghost_runs))
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page("views/recommendation.py").run()
    assert not at.exception, [e.message for e in at.exception]
    at.multiselect(key="rec_cold_genres").set_value(["Mugs"]).run()
    at.slider(key="rec_cold_k").set_value(32).run()  # every user: the two without history among them
    assert not at.exception, [e.message for e in at.exception]
    table = next(d.value for d in at.dataframe if "rank_in_user_list" in d.value)
    assert len(table) == 32
    ghosts = table[table["user_id"].astype(str).isin(GHOSTS)]
    others = table[~table["user_id"].astype(str).isin(GHOSTS)]
    assert ghosts["rank_in_user_list"].tolist() == ["—", "—"]
    assert ghosts["why no rank"].str.contains("no training history").all()
    assert others["rank_in_user_list"].str.fullmatch(r"\d+").all() and (others["why no rank"] == "").all()
    assert any("2 of them have no training history" in c.value for c in at.caption), [c.value for c in at.caption]
