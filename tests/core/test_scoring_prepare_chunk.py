"""``Scorer.prepare_chunk``: the engine hands a scorer each chunk's items before scoring them, in the
worker that scores that chunk, so a scorer that batches work per chunk (finance's one forward per chunk)
computes only what is pending; raising there quarantines the chunk's items and the job goes on."""

from __future__ import annotations

import pandas as pd

from core.scoring import Scorer, WorkItem, read_output, read_quarantine, run_job


class ChunkBatchScorer(Scorer):
    """Scores a chunk's items together in ``prepare_chunk`` and records each batch in a file (the only
    trace that survives the engine's private copy of the scorer)."""

    def __init__(self, log: str, fail_on: str = ""):
        self.log = log
        self.fail_on = fail_on

    def prepare_chunk(self, items):
        ids = [it.id for it in items]
        with open(self.log, "a") as f:
            f.write(",".join(ids) + "\n")
        if self.fail_on in ids:
            raise ValueError(f"batch with {self.fail_on} failed")
        self._batch = {i: len(ids) for i in ids}

    def score(self, item: WorkItem) -> pd.DataFrame:
        return pd.DataFrame({"x": [int(item.id[1:])], "batch": [self._batch[item.id]]})


def test_prepare_chunk_gets_each_pending_chunk_once_and_a_failure_quarantines_its_items(tmp_path):
    items = [WorkItem(id=f"i{k}") for k in range(5)]
    log = tmp_path / "batches.txt"
    s = run_job(items, ChunkBatchScorer(str(log), fail_on="i2"), tmp_path / "out", items_per_chunk=2, progress=False)
    assert log.read_text().splitlines() == ["i0,i1", "i2,i3", "i4"]
    assert (s.items_scored, s.items_quarantined) == (3, 2)
    q = read_quarantine(tmp_path / "out")
    assert list(q["item_id"]) == ["i2", "i3"] and set(q["reason"]) == {"batch with i2 failed"} and set(q["error_type"]) == {"ValueError"}
    assert q["where"].str.startswith("test_scoring_prepare_chunk.py:").all()
    rows = read_output(tmp_path / "out")
    assert list(rows["x"]) == [0, 1, 4] and list(rows["batch"]) == [2, 2, 1]

    (tmp_path / "out" / "_done" / "chunk-000000.json").unlink()  # a resumed job: only chunk 0 is pending
    log.unlink()
    again = run_job(items, ChunkBatchScorer(str(log), fail_on="i2"), tmp_path / "out", items_per_chunk=2, progress=False)
    assert log.read_text().splitlines() == ["i0,i1"] and (again.chunks_done, again.chunks_skipped) == (1, 2)
