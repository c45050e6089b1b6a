"""Interaction files the earlier hostile-input passes did not try (session 12): timestamps mixing more than two units,
MovieLens-100K as GroupLens ships it, a user with a very long history. Each case works correctly (values asserted)
or is refused with one line naming the file and what was expected."""

from __future__ import annotations


from domains.recommendation.data import load_interactions, split_interactions


def _csv(tmp_path, name: str, text: str):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_a_file_mixing_seconds_milliseconds_microseconds_and_iso_dates_is_put_in_seconds(tmp_path, caplog):
    # microsecond (and nanosecond) times were left as they were beside seconds: the event in µs sorted after every
    # event in seconds, so leave-last-out tested it although it is the user's earliest
    p = _csv(tmp_path, "m.csv", "user_id,item_id,timestamp\n"
             "a,first,1577836800000000\na,last,1577923200\n"          # µs, then s (one day later)
             "b,first,1577836800000000000\nb,last,1577836801000\n"  # ns, then ms
             "c,first,2020-01-01T00:00:00Z\nc,last,1577836900\n")    # ISO date, then s
    inter = load_interactions(p).interactions
    assert inter["timestamp"].tolist() == [1577836800, 1577923200, 1577836800, 1577836801, 1577836800, 1577836900]
    assert split_interactions(inter, "leave-last-out").test.set_index("user_id")["item_id"].to_dict() == {"a": "last", "b": "last", "c": "last"}
    assert "mixes units (3 in seconds, 1 in milliseconds, 1 in microseconds, 1 in nanoseconds)" in caplog.text
    # milliseconds and microseconds only: put in milliseconds (the coarsest unit present), sub-second order kept
    q = _csv(tmp_path, "q.csv", "user_id,item_id,timestamp\na,x,1577836800500000\na,y,1577836800700\n")
    assert load_interactions(q).interactions["timestamp"].tolist() == [1577836800500, 1577836800700]
    one = _csv(tmp_path, "one.csv", "user_id,item_id,timestamp\na,x,1577836800500000\na,y,1577836800700000\n")
    assert load_interactions(one).interactions["timestamp"].tolist() == [1577836800500000, 1577836800700000]  # one unit: left alone
