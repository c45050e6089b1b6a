"""A module whose import is recorded (pid appended to the file named by ``SCORING_PRELOAD_PROBE``), and scorers
that need it, for tests/core/test_scoring_preload.py: with ``Scorer.preload`` the local engine's workers are
forked from one fork server that imported it; without, every spawned worker imports it again.

    python -c "from tests.scoring_preload_probe import main; main()" OUT preload|spawn
"""

from __future__ import annotations

import os
import sys
import time

import pandas as pd

from core.scoring import Scorer, WorkItem, run_job

IMPORTED_IN = os.getpid()
with open(os.environ["SCORING_PRELOAD_PROBE"], "a") as _f:
    _f.write(f"{IMPORTED_IN}\n")


class ProbeScorer(Scorer):
    preload = ("tests.scoring_preload_probe",)

    def load(self):
        self._load_info = {"imported_in": IMPORTED_IN, "worker": os.getpid()}
        with open(os.environ["SCORING_PRELOAD_PROBE"] + ".workers", "a") as f:
            f.write(f"{os.getpid()}\n")

    def score(self, item: WorkItem) -> pd.DataFrame:
        time.sleep(float(os.environ.get("SCORING_PROBE_SECONDS_PER_ITEM", "0")))  # a long job, to be killed
        return pd.DataFrame({"x": [int(item.id)]})


class SpawnProbeScorer(ProbeScorer):
    preload = ()


def main() -> None:
    """Not ``python -m`` of this module: its classes would be ``__main__``'s, which every worker imports again."""
    out, mode = sys.argv[1], sys.argv[2]
    scorer = ProbeScorer() if mode == "preload" else SpawnProbeScorer()
    s = run_job([WorkItem(id=str(i)) for i in range(4)], scorer, out, workers=2, items_per_chunk=1, progress=False)
    print(sorted({(v["imported_in"], v["worker"]) for v in s.worker_load_info.values()}))
