"""Recommendation test helpers: for the ``train --resume`` tests (the ``no_data`` fixture that uses
:class:`DataWasRead` is in ``tests/recommendation/conftest.py``), a tiny RecBole-style shop to train on, and evaluate run
from a folder with the job folders it left.

    from tests.recommendation_support import DataWasRead, resume_cfg, write_recbole_shop, evaluate_from, job_folders
"""

from __future__ import annotations


class DataWasRead(Exception):
    """Raised by the ``no_data`` fixture's stand-in for the data load: reaching it means a command got past its
    ``--resume`` checks."""


def resume_cfg(d, **kw):
    """A tiny ``train --resume`` config on ``d/a.csv`` with runs under ``d/runs`` (one step, no baselines, no text, no
    wide part, no tracking); ``kw`` sets the rest (``name``, ``validation_ratio``, ...) and overrides any of these."""
    from domains.recommendation.train import TrainConfig

    base = dict(runs_dir=str(d / "runs"), data=str(d / "a.csv"), track=False, epochs=1, max_steps=1, baselines=False,
                text="none", wide=False, resume=True)
    return TrainConfig(**{**base, **kw})


def write_recbole_shop(folder, n_users: int, n_items: int, extra_users: tuple[str, ...] | None = None) -> None:
    """A RecBole-style shop in ``folder``: ``shop.inter`` where customers c0..c{n_users-1} each buy 6 of the items P0..P29 of
    their category (``u % 3``: Shirts, Mugs, Lamps; drawn with ``numpy.random.default_rng(0)``, times ``1000·u + t``),
    ``shop.item`` listing P0..P{n_items-1} (title and category), and — when ``extra_users`` is given — ``shop.user``
    listing the buyers and then ``extra_users`` (users with no order), with an age and a gender."""
    import numpy as np

    rng = np.random.default_rng(0)
    cats = ["Shirts", "Mugs", "Lamps"]
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    for u in range(n_users):
        liked = [i for i in range(30) if i % 3 == u % 3]
        for t, i in enumerate(rng.choice(liked, 6, replace=False)):
            lines.append(f"c{u}\tP{i}\t{1000 * u + t}")
    (folder / "shop.inter").write_text("\n".join(lines) + "\n")
    (folder / "shop.item").write_text("\n".join(["item_id:token\ttitle:token_seq\tcategories:token_seq"] +
                                                [f"P{i}\t{cats[i % 3]} {i}\t{cats[i % 3]}" for i in range(n_items)]) + "\n")
    if extra_users is not None:
        users = [f"c{i}" for i in range(n_users)] + list(extra_users)
        (folder / "shop.user").write_text("\n".join(["user_id:token\tage:float\tgender:token"] +
                                                    [f"{u}\t{20 + n % 40}\t{'MF'[n % 2]}" for n, u in enumerate(users)]) + "\n")


def evaluate_from(args, cwd, monkeypatch) -> int:
    """``python -m domains.recommendation.evaluate ARGS --no-track`` run from folder ``cwd``; its exit code."""
    from domains.recommendation import evaluate

    monkeypatch.chdir(cwd)
    return evaluate.main([*args, "--no-track"])


def job_folders(d) -> list[str]:
    """The names of the recommendation job folders under ``d/jobs`` (none yet: empty)."""
    return sorted(p.name for p in (d / "jobs" / "recommendation").glob("*")) if (d / "jobs" / "recommendation").is_dir() else []
