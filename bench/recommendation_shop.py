"""Shop catalogue benchmark → BENCHMARKS.md section "recommendation-shop": items nobody bought in the ranked lists.

A shop's catalogue lists far more items than were ever sold. With the in-batch sampled softmax an item enters a batch
only as some row's positive, so the id embedding of an item without a training interaction keeps its random initial
value. This command measures what that did to the ranked lists and what the current rule (such items are in no ranked
list: ``model.untrained_id_mask``, domain README "Guarantees") changes, on a synthetic shop, per seed:

* ``two-tower, current rule`` — the run as ``train`` evaluates and serves it (untrained items in no list);
* ``two-tower, every item ranked`` — the SAME trained weights, every catalogue item ranked by its own id embedding
  (``all_embeddings(..., trained_items=None)``: the behaviour before session 14), so the difference is measured in one run;
* ``two-tower --softmax full`` — every id is trained (as a negative of every step): every item ranked (``--no-full``: skip);
* ``most popular`` — the baseline (``baselines.MostPopular`` on the same split, as ``train`` evaluates it).

Columns: test NDCG@10 and recall@10 (the training command's metrics code, training items removed), and over the test
users' top-10 lists the share of places held by never-sold items (in no interaction of the shop), of first places held
by them, and of places held by items without a training interaction (never sold, or sold only in test rows).

The shop (:func:`make_shop`, deterministic given ``--shop-seed``; the model seed varies, the shop does not):
``--items`` N catalogue items in ``--categories`` categories (drawn uniformly), of which ``--sold`` S (drawn at random)
are ever sold, with a Zipf popularity (weight 1 / rank^``--zipf``, ranks in random order); ``--users`` users, each
preferring 2 categories, buy between 8 and 40 distinct items (8 + Poisson(10), capped): ``--in-category`` (0.8) of them drawn
among the sold items of their categories by popularity, the rest among all sold items by popularity; timestamps
increase per user (start uniform over 90 days, gaps 1 minute to 3 days). Written as RecBole atomic files
(``shop.inter``: user, item, timestamp; ``shop.item``: item id, title, categories — all N items, as a catalogue lists
them) in a temporary folder.

Training: the real command (``domains.recommendation.train.train`` on a ``TrainConfig``: what ``python -m
domains.recommendation.train --data SHOP --no-wide --text none --epochs 5 --seed SEED --no-baselines --no-track`` runs;
default split msr-stratified-75, validation carve 0.2, early stopping, refit), one run per seed; the run's own test
NDCG@10 is checked against the figure recomputed here.

    python bench/recommendation_shop.py                   # seeds 0 1 2, 5,000 items, 500 sold
    python bench/recommendation_shop.py --quick --no-write  # tiny shop, smoke test of the command itself
    python bench/recommendation_shop.py --report          # the table of the last run's JSON (runs/bench-recommendation-shop)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("SUITE_PROGRESS", "0")  # no progress bars in the bench log
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from core.bench import cpu_label, machine_line, markdown_table, write_benchmark_section  # noqa: E402

K = 10
OUT = Path(__file__).resolve().parents[1] / "runs" / "bench-recommendation-shop"
SHOP = {"items": 5000, "sold": 500, "users": 1500, "categories": 20, "zipf": 1.0, "in_category": 0.8}
QUICK_SHOP = {"items": 300, "sold": 30, "users": 60, "categories": 3, "zipf": 1.0, "in_category": 0.8}
LABELS = {"rule": "two-tower, current rule (untrained items in no list)",
          "every_item": "two-tower, every item ranked (same weights: the behaviour before)",
          "full_softmax": "two-tower --softmax full",
          "most_popular": "most popular (baseline)"}
METRICS = [f"ndcg@{K}", f"recall@{K}", "never_sold_top10", "never_sold_first", "untrained_top10"]


def make_shop(folder: Path, items: int, sold: int, users: int, categories: int, zipf: float, in_category: float = 0.8, seed: int = 0) -> dict:
    """Write ``shop.inter`` and ``shop.item`` (RecBole atomic files) into ``folder``; returns what was drawn.
    Deterministic given the arguments (module docstring)."""
    if not 0 < sold <= items or categories < 1 or users < 1 or not 0 <= in_category <= 1:
        raise ValueError(f"shop: need 0 < sold <= items, categories >= 1, users >= 1, 0 <= in_category <= 1 "
                         f"(got {items=}, {sold=}, {categories=}, {users=}, {in_category=})")
    rng = np.random.default_rng(seed)
    cat = rng.integers(0, categories, items)
    sold_ids = np.sort(rng.choice(items, sold, replace=False))
    weight = np.zeros(items)
    weight[sold_ids] = 1.0 / (1.0 + rng.permutation(sold)) ** zipf  # Zipf over the sold items, ranks in random order
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    t0 = 1_700_000_000
    bought = set()
    for u in range(users):
        liked = rng.choice(categories, min(2, categories), replace=False)
        n = int(min(8 + rng.poisson(10), 40))
        in_liked = weight * np.isin(cat, liked)
        chosen: list[int] = []
        for _ in range(n):
            w = in_liked if (rng.random() < in_category and in_liked.sum() > 0) else weight
            w = w.copy()
            w[chosen] = 0.0
            if w.sum() == 0:
                w = weight.copy()
                w[chosen] = 0.0
                if w.sum() == 0:
                    break
            chosen.append(int(rng.choice(items, p=w / w.sum())))
        t = t0 + rng.integers(0, 90 * 86400)
        for i in chosen:
            t += int(rng.integers(60, 3 * 86400))
            lines.append(f"u{u}\tP{i}\t{t}")
            bought.add(i)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "shop.inter").write_text("\n".join(lines) + "\n")
    rows = ["item_id:token\ttitle:token_seq\tcategories:token_seq"] + [f"P{i}\tC{cat[i]} item {i}\tC{cat[i]}" for i in range(items)]
    (folder / "shop.item").write_text("\n".join(rows) + "\n")
    return {"interactions": len(lines) - 1, "items_bought": len(bought), "sold_ids": sorted(f"P{i}" for i in bought)}


def _shares(recs: np.ndarray, users: np.ndarray, never_sold: np.ndarray, untrained: np.ndarray) -> dict[str, float]:
    """Share of the top-10 places / first places of ``users``' lists held by never-sold and by untrained items."""
    top = recs[users, :K]
    valid = top >= 0  # -1 pads a list shorter than k
    safe = np.where(valid, top, 0)
    return {"never_sold_top10": float((never_sold[safe] & valid).sum() / max(valid.sum(), 1)),
            "never_sold_first": float(never_sold[safe[:, 0]].mean()),
            "untrained_top10": float((untrained[safe] & valid).sum() / max(valid.sum(), 1))}


def run_seed(shop: Path, never_sold_ids: set, seed: int, epochs: int, runs: Path, full: bool, quick: bool) -> list[dict]:
    """Train the two-tower on ``shop`` (the command's function), and score it both ways; returns one row per model."""
    from domains.recommendation.baselines import MostPopular
    from domains.recommendation.config import TrainConfig
    from domains.recommendation.evaluation import model_scores
    from domains.recommendation.inference import Recommender
    from domains.recommendation.metrics import ranking_metrics, top_k
    from domains.recommendation.model import rank_mask
    from domains.recommendation.train import train
    from domains.recommendation.training import prepare_inputs

    extra = {"batch_size": 64} if quick else {}
    rows = []
    prep = None
    for variant in ("sampled", "full") if full else ("sampled",):
        cfg = TrainConfig(data=str(shop), wide=False, text="none", epochs=epochs, seed=seed, baselines=False, track=False,
                          softmax=variant, runs_dir=str(runs), name=f"s{seed}-{variant}", **extra)
        t0 = time.perf_counter()
        run_dir = Path(train(cfg))
        seconds = time.perf_counter() - t0
        prep = prep or prepare_inputs(cfg)  # the run's split again (deterministic): the test users and their items
        rec = Recommender.load(run_dir)  # the run as serving loads it: weights, batcher, the untrained items
        if list(rec.space.item_ids) != list(prep.space.item_ids) or list(rec.space.user_ids) != list(prep.space.user_ids):
            raise RuntimeError(f"{run_dir}: its feature space differs from the split recomputed here")
        seen, truth, pop = prep.seen(), prep.truth(), prep.popularity()
        users = np.flatnonzero([len(t) > 0 for t in truth])
        never_sold = np.array([i in never_sold_ids for i in prep.space.item_ids])
        untrained = np.bincount(prep.train_i, minlength=prep.space.n_items) == 0
        reported = json.loads((run_dir / "metrics.json").read_text())
        reported = reported.get("summary", reported).get(f"ndcg@{K}")
        scored = {("rule" if variant == "sampled" else "full_softmax"): rank_mask(rec.user_vecs @ rec.item_vecs.T, rec.untrained)}
        if variant == "sampled":  # the same weights, every item by its own id embedding (trained_items=None)
            scored["every_item"] = model_scores(rec.model, rec, trained_items=None)
        for name, scores in scored.items():
            recs, _ = top_k(scores, K, seen)
            m = ranking_metrics(recs, truth, prep.space.n_items, K, pop)
            row = {"seed": seed, "model": name, f"ndcg@{K}": m[f"ndcg@{K}"], f"recall@{K}": m[f"recall@{K}"],
                   **_shares(recs, users, never_sold, untrained), "train_seconds": seconds}
            if name != "every_item":  # the figure the run itself wrote: serving ranks what train evaluated
                row["run_reported_ndcg"] = reported
                if reported is None or abs(reported - row[f"ndcg@{K}"]) > 1e-6:
                    raise RuntimeError(f"{run_dir}: the run reported test NDCG@{K} {reported}, recomputed here {row[f'ndcg@{K}']}")
            rows.append(row)
    mp = MostPopular(prep.space.n_items).fit(prep.train_u, prep.train_i)
    recs, _ = top_k(mp.scores(prep.space.n_users), K, seen)
    m = ranking_metrics(recs, truth, prep.space.n_items, K, pop)
    rows.append({"seed": seed, "model": "most_popular", f"ndcg@{K}": m[f"ndcg@{K}"], f"recall@{K}": m[f"recall@{K}"],
                 **_shares(recs, users, never_sold, untrained)})
    return rows


def summary(rows: list[dict]) -> list[dict]:
    """Mean ± sd over seeds per model (sd over one seed: '–')."""
    out = []
    for name in LABELS:
        got = [r for r in rows if r["model"] == name]
        if not got:
            continue
        row = {"model": LABELS[name], "seeds": len(got)}
        for m in METRICS:
            vals = [r[m] for r in got]
            pct = m.endswith(("top10", "first"))
            f = (lambda v: f"{100 * v:.1f}") if pct else (lambda v: f"{v:.4f}")
            sd = f(statistics.stdev(vals)) if len(vals) > 1 else "–"
            row[m + (" (percent)" if pct else "")] = f"{f(statistics.mean(vals))} ± {sd}"
        out.append(row)
    return out


def render(res: dict) -> str:
    s = res["shop"]
    head = "## Recommendation: never-sold catalogue items in the ranked lists (`bench/recommendation_shop.py`)"
    if res["quick"]:
        head += " — QUICK SMOKE SETTINGS, not a result"
    return "\n\n".join([
        head,
        f"`{res['command']}` — {res.get('machine') or 'CPU: ' + res['cpu']}; torch threads 1; {res['wall_seconds']:.0f} s in all; 1-min load average at the end "
        f"{res['load_average']:.1f} (2 cores; the figures are rankings, not times).",
        f"SYNTHETIC shop (generator in the script, shop seed {s['seed']}): {s['items']:,} catalogue items in {s['categories']} categories, "
        f"{s['sold']} of them ever sold (Zipf {s['zipf']} popularity; {s['items_bought']} bought at least once), {s['users']:,} users preferring "
        f"2 categories each ({s.get('in_category', 0.8):g} of their purchases in them), {s['interactions']:,} interactions with timestamps. Each seed trains the two-tower once through the "
        f"training command (`--no-wide --text none --epochs {res['epochs']} --no-baselines`, default split msr-stratified-75, "
        "validation carve 0.2, early stopping, refit); 'every item ranked' scores the SAME weights with every catalogue item by "
        "its own id embedding (`model_scores(..., trained_items=None)`, the behaviour before session 14). Shares are over the "
        "top-10 lists of the test users (training items removed). never-sold = in no interaction of the shop; untrained = no "
        f"training interaction. Mean ± sd over seeds {res['seeds']} (model seed and validation carve; the shop and its test split are fixed).",
        markdown_table(summary(res["rows"])),
    ])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="model seeds (each: one training run per variant)")
    ap.add_argument("--quick", action="store_true", help="tiny shop (300 items, 30 sold, 60 users), 2 epochs: smoke test of the command itself; tables are marked")
    ap.add_argument("--epochs", type=int, default=None, help="training --epochs (the cap of early stopping; default 5, --quick 2)")
    ap.add_argument("--no-full", action="store_true", help="skip the --softmax full runs")
    ap.add_argument("--shop-seed", type=int, default=0, help="seed of the synthetic shop (fixed across model seeds)")
    for name, kind, what in (("items", int, "catalogue items"), ("sold", int, "items ever sold"), ("users", int, "users"),
                             ("categories", int, "item categories"), ("zipf", float, "Zipf exponent of the sold items' popularity"),
                             ("in-category", float, "share of a user's purchases drawn within their 2 preferred categories")):
        ap.add_argument(f"--{name}", type=kind, default=None, help=f"shop: {what} (default {SHOP[name.replace('-', '_')]}, --quick {QUICK_SHOP[name.replace('-', '_')]})")
    ap.add_argument("--out", type=Path, default=OUT, help="folder of the result JSON (shop.json); the shop and its training runs live in a temporary folder, removed at the end")
    ap.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    ap.add_argument("--report", action="store_true", help="train nothing: render (and, without --no-write, write) the table of the "
                    "shop.json already in --out")
    args = ap.parse_args(argv)
    if args.report:
        saved = args.out / "shop.json"
        if not saved.is_file():
            ap.error(f"--report: no {saved} (run the benchmark first, with the same --out)")
        return _publish(json.loads(saved.read_text()), args.no_write)
    if any(s < 0 for s in args.seeds):
        ap.error(f"--seeds: expected seeds >= 0, got {args.seeds}")
    epochs = args.epochs or (2 if args.quick else 5)
    if epochs < 1:
        ap.error(f"--epochs: expected at least 1, got {epochs}")
    torch.set_num_threads(1)
    shop_cfg = {k: (getattr(args, k) if getattr(args, k) is not None else v) for k, v in (QUICK_SHOP if args.quick else SHOP).items()}
    c = shop_cfg
    if not (0 < c["sold"] <= c["items"] and c["users"] >= 1 and c["categories"] >= 1 and 0 <= c["in_category"] <= 1 and c["zipf"] >= 0):
        ap.error(f"shop settings {c}: expected 0 < --sold <= --items, --users and --categories at least 1, --in-category in [0, 1], --zipf >= 0")
    t0 = time.perf_counter()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-shop-") as tmp:
        tmp = Path(tmp)
        drawn = make_shop(tmp / "shop", **shop_cfg, seed=args.shop_seed)
        bought = set(drawn.pop("sold_ids"))
        never_sold = {f"P{i}" for i in range(shop_cfg["items"])} - bought
        for seed in args.seeds:
            rows += run_seed(tmp / "shop", never_sold, seed, epochs, tmp / "runs", not args.no_full, args.quick)
            print(f"seed {seed}: done ({time.perf_counter() - t0:.0f} s)", flush=True)
    cmd = "python bench/recommendation_shop.py" + (" --quick" if args.quick else "") + (f" --seeds {' '.join(map(str, args.seeds))}" if args.seeds != [0, 1, 2] else "") \
        + (f" --epochs {args.epochs}" if args.epochs else "") + (" --no-full" if args.no_full else "") \
        + "".join(f" --{k.replace('_', '-')} {getattr(args, k)}" for k in SHOP if getattr(args, k) is not None) \
        + (f" --shop-seed {args.shop_seed}" if args.shop_seed else "")
    res = {"command": cmd, "quick": args.quick, "seeds": args.seeds, "epochs": epochs, "shop": {**shop_cfg, **drawn, "seed": args.shop_seed},
           "rows": rows, "wall_seconds": time.perf_counter() - t0, "cpu": cpu_label(), "machine": machine_line(),
           "load_average": os.getloadavg()[0]}
    args.out.mkdir(parents=True, exist_ok=True)
    tmp_json = args.out / ".shop.json.tmp"
    tmp_json.write_text(json.dumps(res, indent=1, default=float))
    tmp_json.replace(args.out / "shop.json")
    return _publish(res, args.no_write)


def _publish(res: dict, no_write: bool) -> int:
    md = render(res)
    if not no_write:
        write_benchmark_section("recommendation-shop", md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
