"""An unadjusted reverse split (1:25, 1:30, 1:40, 1:50: the consolidations of penny stocks) loaded silently: the split rule
knew ratios up to 20 and the unit_change rule starts at 80x, so a one-day jump of x25..x50 that stays became a daily
log return of +3.2..+3.9 in the history, setting the ticker's volatility scale, with no warning. Such a jump is now a
suspected_split warning naming the ratio; the bundled panel gets no new warning from it."""

from __future__ import annotations

import pandas as pd
import pytest

from domains.finance.data import load_panel, read_price_file, validate_prices


@pytest.fixture(scope="module")
def panel():
    return load_panel(columns=["date", "ticker", "close"])


@pytest.mark.parametrize("k", [25, 30, 40, 50])
@pytest.mark.parametrize("direction", ["reverse", "forward"])
def test_an_unadjusted_split_by_a_large_ratio_is_warned_with_its_ratio(panel, tmp_path, k, direction):
    """Real KO closes (its last 300 days) with the closes before day 150 written as they were before a 1:k reverse split
    (k times lower than the split-adjusted ones) or a k:1 split (k times higher)."""
    g = panel[panel["ticker"] == "KO"].tail(300).reset_index(drop=True)
    close = g["close"].to_numpy().copy()
    close[:150] *= (1 / k) if direction == "reverse" else k
    path = tmp_path / "ko.csv"
    pd.DataFrame({"date": g["date"].dt.strftime("%Y-%m-%d"), "ticker": "KO", "close": close}).to_csv(path, index=False)
    got, rep = read_price_file(path)
    assert [w["kind"] for w in rep.warnings] == ["suspected_split"] and rep.metrics()["data/warnings/suspected_split"] == 1
    w = rep.warnings[0]
    assert w["date"] == f"{g['date'][150]:%Y-%m-%d}"
    ratio = w["value"]  # old / new price
    assert ratio == pytest.approx((1 / k if direction == "reverse" else k) * g["close"][149] / g["close"][150])
    assert (f"an unadjusted 1:{k} reverse split?" if direction == "reverse" else f"an unadjusted {k}:1 split?") in w["detail"]
    assert len(got) == len(g) - 1  # kept as it is: a split is the user's to adjust, not a unit to rescale


def test_the_bundled_panel_gets_no_new_split_warning(panel):
    """The only split-like move of the bundled panel is RRC's 1990-04-10 (ratio 3, kept since the rule exists); none of
    its other moves is near a new ratio (its largest other daily move is AAPL's -52 % of 2000-09-29)."""
    _, rep = validate_prices(panel, source="bundled", min_history=100)
    splits = [(w["ticker"], w["date"]) for w in rep.warnings if w["kind"] == "suspected_split"]
    assert splits == [("RRC", "1990-04-10")] and rep.warning_counts() == {"suspected_split": 1, "stale_prices": 2}
    assert rep.warnings[0]["value"] == pytest.approx(3, rel=0.01) and "3:1 split" in rep.warnings[0]["detail"]


@pytest.mark.parametrize("mult", [100.0, 0.01, 4.0, 0.25])
def test_a_reverting_spike_is_one_price_spike_without_repair_too(panel, mult):
    """validate_prices without repair (the bundled panel, the library call) keeps a fat-finger row; the move back from it
    was then read as a jump of its own that stays: a x100 spike got a price_spike and a unit_change ('write every price in
    one unit') for the next day, a x4 one a price_spike and a suspected_split. One finding, as with repair."""
    g = panel[panel["ticker"] == "KO"].tail(300).reset_index(drop=True)
    g.loc[150, "close"] *= mult
    for repair in (False, True):
        _, rep = validate_prices(g, source="ko", min_history=100, repair=repair)
        assert [(w["kind"], w["date"]) for w in rep.warnings] == [("price_spike", f"{g['date'][150]:%Y-%m-%d}")], repair
