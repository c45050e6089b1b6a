"""Inspect a scoring output folder.

    python -m core.scoring status OUT        chunks committed of total, rows, quarantined, complete?
    python -m core.scoring quarantine OUT    the quarantined items with their reasons
    python -m core.scoring head OUT [-n 10]  the first committed output rows
"""

from __future__ import annotations

import argparse
import json
import sys

import pandas as pd

from core.errors import UserInputError
from core.scoring.job import job_status, read_output, read_quarantine


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m core.scoring", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    ap.add_argument("command", choices=["status", "quarantine", "head"])
    ap.add_argument("out", help="a scoring output folder (--out of a score command)")
    ap.add_argument("-n", type=int, default=10, help="rows for head")
    args = ap.parse_args(argv)
    try:
        if args.command == "status":
            print(json.dumps(job_status(args.out), indent=2))
        elif args.command == "quarantine":
            q = read_quarantine(args.out)
            with pd.option_context("display.max_colwidth", 120, "display.width", 200):
                print(q[["item_id", "error_type", "reason", "where"]].to_string(index=False) if len(q) else "no quarantined items")
        else:
            with pd.option_context("display.width", 200):
                print(read_output(args.out).head(args.n).to_string(index=False))
    except (UserInputError, OSError) as e:  # a damaged or missing file of the folder: one line naming it
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
