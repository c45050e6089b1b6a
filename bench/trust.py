"""Trust bench (issue 17): federated vs central training and the utility-privacy table of the
finance TFT. Writes the "trust" section of BENCHMARKS.md, one sub-block per part:

    .venv/bin/python bench/trust.py --part federated --workers 6   # federated vs central (~50 min on 2 cores at load ~20)
    .venv/bin/python bench/trust.py --part privacy                  # the utility-privacy table
    .venv/bin/python bench/trust.py --part medical-privacy          # the medical 3D UNet's (own section, not in 'all')
    .venv/bin/python bench/trust.py --part medical-privacy-public   # its public-pretraining + private-fine-tuning recipe (own section)

Federated: 3 sites with disjoint ticker groups of the bundled panel; Flower's FedAvg, FedProx and
FedAvgM (in-process simulation through Flower's Server) against central training of the same
initial weights on the same budget (rounds x sites x local batches optimiser steps of the same
batch size = central's epochs x batches); FedProx's mu and FedAvgM's server learning rate are
chosen on a validation period before the held-out one; metric: held-out vol pinball (last 63
trading days, lower is better), the federated / central ratio paired per seed, mean ± sd.
Privacy: DP-SGD (Opacus DPOptimizer, PRV accountant, δ=1e-5, privacy unit = one training window)
at ε ∈ {1, 3, 8, ∞}; ∞ = the same code without noise and clipping.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from core.bench import BENCHMARKS_MD, machine_line, markdown_table, write_benchmark_section  # noqa: E402
from domains.finance.federated import FederateConfig, central_baseline, federate_model  # noqa: E402
from domains.finance.private import PrivateConfig, train_private_model  # noqa: E402
from domains.finance.trust import heldout_metrics, new_model, prepare  # noqa: E402


def ms(v: list[float]) -> str:
    return f"{np.mean(v):.4f} ± {np.std(v, ddof=1):.4f}" if len(v) > 1 else f"{v[0]:.4f}"


# --- federated part (FED) ---------------------------------------------------------------------------

_SPLITS: dict = {}  # "validation" / "heldout" -> Prepared, built in the parent, inherited by forked workers


def _es_job(job: tuple) -> dict:
    """One early-stopping run (``--early-stopping``): (seed, method, strategy kwargs, base config) ->
    its best-on-validation checkpoint's validation and held-out vol pinball, round and curves."""
    seed, method, kw, base = job
    torch.set_num_threads(1)
    p, vp = _SPLITS["heldout"], _SPLITS["validation"]
    cfg = FederateConfig(**base, seed=seed, **kw)
    torch.manual_seed(seed)
    initial = new_model(p, cfg.lr)  # the same initial weights for central and every strategy of this seed
    if method == "central":
        _, m = central_baseline(cfg, vp, initial, heldout=p)
    else:
        _, m, _ = federate_model(cfg, vp, initial, heldout=p)
    keep = ("val_pinball_vol", "validation_pinball_vol", "best_round", "validation_curve", "seconds", "update_agreement", "bytes_per_round",
            "parameter_bytes", "site_tickers", "site_windows", "total_steps")
    return {"seed": seed, "method": method, **{k: m[k] for k in keep if k in m}}


def _run_cached(jobs: list, workers: int, cache: Path) -> dict:
    """Run the jobs not yet in ``cache`` (one JSON line per finished job, appended as it finishes, so
    an interrupted bench keeps what it measured); returns {(seed, method): result} of all jobs."""
    import json
    done = {}
    if cache.is_file():
        for line in cache.read_text().splitlines():
            r = json.loads(line)
            done[(r["seed"], r["method"])] = r
    todo = [j for j in jobs if (j[0], j[1]) not in done]
    cache.parent.mkdir(parents=True, exist_ok=True)

    def keep(r: dict) -> None:
        done[(r["seed"], r["method"])] = r
        with cache.open("a") as f:
            f.write(json.dumps(r) + "\n")
        print(r["seed"], r["method"], "held-out", round(r["val_pinball_vol"], 5), "validation", round(r["validation_pinball_vol"], 5),
              "best round", r["best_round"], flush=True)

    if workers <= 1 or len(todo) <= 1:
        for j in todo:
            keep(_es_job(j))
    elif todo:
        import multiprocessing as mp
        with mp.get_context("fork").Pool(min(workers, len(todo))) as pool:
            for r in pool.imap_unordered(_es_job, todo, chunksize=1):
                keep(r)
    return {(s, m): done[(s, m)] for s, m, _, _ in jobs if (s, m) in done}


def _share_to_reach(curve: list[float], value: float) -> str:
    """The share of the budget after which ``curve`` (one value per round, round 0 first) first gets to
    ``value`` or below ("not reached" if it never does)."""
    i = next((i for i, v in enumerate(curve) if v <= value + 1e-12), None)
    return "not reached" if i is None else f"{i / (len(curve) - 1):.2f}"


def verdict_cell(ratios: list[float], deciding: bool = True) -> str:
    """The "within 2 %" cell: met / missed for the row that decides the target; for a row of a budget
    pre-registered as an extra (``--does-not-decide``) only where the mean ratio lies, never "met"."""
    mean = float(np.mean(ratios))
    if deciding:
        return "met" if mean <= 1.02 else f"missed (+{(mean - 1) * 100:.1f} %)"
    return f"{'<=' if mean <= 1.02 else '>'} 1.02 ({(mean - 1) * 100:+.1f} %; extra budget, does not decide the target)"


def _read_cache(path: Path) -> dict:
    """{(seed, method): result} of a ``--cache`` JSON-lines file."""
    import json
    return {(r["seed"], r["method"]): r for r in map(json.loads, path.read_text().splitlines())}


def pooled_row(res: dict, other: dict, method: str, name: str) -> dict:
    """An information row: ``method``'s paired held-out ratios to central over this table's seeds and the
    seeds of ``other`` (another cache of the SAME protocol, e.g. an earlier run at this budget), seeds
    present in both counted once (this table's). It never says met/missed: the pre-registered row decides."""
    pairs = {s: r for (s, m), r in other.items() if m == method and (s, "central") in other}
    pairs.update({s: r for (s, m), r in res.items() if m == method and (s, "central") in res})
    central = {**{s: r for (s, m), r in other.items() if m == "central"}, **{s: r for (s, m), r in res.items() if m == "central"}}
    seeds = sorted(pairs)
    r = [pairs[s]["val_pinball_vol"] / central[s]["val_pinball_vol"] for s in seeds]
    v = [pairs[s]["validation_pinball_vol"] / central[s]["validation_pinball_vol"] for s in seeds]
    return {"training": f"{method}, pooled with the seeds of {name} (information: does not decide the target)",
            "seeds": ", ".join(map(str, seeds)), "held-out vol pinball": ms([pairs[s]["val_pinball_vol"] for s in seeds]),
            "vs central, paired per seed (mean ± sd)": ms(r), "per-seed ratios": ", ".join(f"{x:.3f}" for x in r),
            "validation ratio": ms(v), "best round per seed": ", ".join(str(pairs[s]["best_round"]) for s in seeds),
            "within 2 %": verdict_cell(r, deciding=False).replace("extra budget", "information"),
            "central reaches its validation pinball after (share of the samples)": "-", "update agreement": "-"}


def federated_early_stopping_table(args) -> tuple[str, dict]:
    """Both trained with the same budget of samples and the same early-stopping rule: train on the
    windows before the validation period, score it every round (central: every sites x local batches
    steps), keep the best checkpoint, score the held-out period once with it. FedAvgM's server
    learning rate and FedProx's mu are fixed extra rows (run after the central/FedAvg pairs)."""
    from domains.finance.federated import validation_split

    base = dict(rounds=args.rounds, max_batches=args.max_batches, batch_size=args.batch_size, local_epochs=1, sites=args.sites,
                threads=1, lr=args.lr, early_stopping=True)
    p = prepare(FederateConfig(**base))
    _SPLITS["heldout"], _SPLITS["validation"] = p, validation_split(p, args.val_days)
    cands = {"fedavg": {"strategy": "fedavg"}}
    cands.update({f"fedavgm server-lr={lr:g}": {"strategy": "fedavgm", "server_lr": lr, "server_momentum": args.server_momentum}
                  for lr in args.server_lrs if lr != 1})
    prox = {f"fedprox mu={mu:g}": {"strategy": "fedprox", "mu": mu} for mu in args.mus}
    # the headline pair (central, FedAvg) for every seed first, then the other candidates, FedProx last: an interrupted
    # bench (the cache keeps every finished run) still has the paired comparison
    jobs = [(s, name, {}, base) for s in args.seeds for name in ("central", "fedavg")]
    jobs += [(s, name, kw, base) for name, kw in cands.items() if name != "fedavg" for s in args.seeds]
    jobs += [(s, name, kw, base) for name, kw in prox.items() for s in args.seeds]
    cache = Path(args.cache) if args.cache else Path("runs/bench") / f"{args.section}.jsonl"
    if args.from_cache:
        res = _read_cache(cache)
    else:
        res = _run_cached(jobs, args.workers, cache)
    seeds = [s for s in args.seeds if (s, "central") in res]
    have = {m: [s for s in seeds if (s, m) in res] for m in [*cands, *prox]}  # the seeds each method finished (paired with central)
    methods = [m for m in have if have[m]]
    ratio = lambda m, key: [res[(s, m)][key] / res[(s, "central")][key] for s in have[m]]  # noqa: E731
    info = next(res[(s, m)] for m in methods for s in have[m])
    last = args.rounds

    def conv(m, ss):
        rounds = [res[(s, m)]["best_round"] for s in ss]
        return ", ".join(map(str, rounds)) + (" (still improving at budget)" if max(rounds) > max(last - 3, 0) else "")

    rows = [{"training": "central (same code, all tickers)", "seeds": ", ".join(map(str, seeds)),
             "held-out vol pinball": ms([res[(s, "central")]["val_pinball_vol"] for s in seeds]),
             "vs central, paired per seed (mean ± sd)": "1", "per-seed ratios": "-", "validation ratio": "1",
             "best round per seed": conv("central", seeds), "within 2 %": "-",
             "central reaches its validation pinball after (share of the samples)": "-", "update agreement": "-"}]
    # the server learning rate is chosen on validation only if every candidate finished every seed; otherwise FedAvg decides
    full = [m for m in cands if have[m] == seeds]
    decides = min(full, key=lambda m: np.mean(ratio(m, "validation_pinball_vol"))) if len(full) == len(cands) else "fedavg"
    for m in methods:
        r = ratio(m, "val_pinball_vol")
        if getattr(args, "does_not_decide", False):
            label = m + " (extra budget: does not decide the target)"
        elif len(full) == len(cands) > 1 and m in cands:
            label = m + (" (chosen on validation: decides the target)" if m == decides else " (not chosen on validation)")
        else:
            label = m + (" (decides the target)" if m == decides else " (extra row, not tuned, does not decide the target)")
        rows.append({"training": label, "seeds": ", ".join(map(str, have[m])),
                     "held-out vol pinball": ms([res[(s, m)]["val_pinball_vol"] for s in have[m]]),
                     "vs central, paired per seed (mean ± sd)": ms(r), "per-seed ratios": ", ".join(f"{x:.3f}" for x in r),
                     "validation ratio": ms(ratio(m, "validation_pinball_vol")), "best round per seed": conv(m, have[m]),
                     "within 2 %": verdict_cell(r, not getattr(args, "does_not_decide", False)),
                     "central reaches its validation pinball after (share of the samples)": ", ".join(
                         _share_to_reach(res[(s, 'central')]['validation_curve'], res[(s, m)]['validation_pinball_vol']) for s in have[m]),
                     "update agreement": f"{np.mean([np.mean(res[(s, m)]['update_agreement']) for s in have[m]]):.3f}"})
    for other in getattr(args, "pool_with", None) or []:
        rows.append(pooled_row(res, _read_cache(Path(other)), "fedavg", Path(other).name))
    steps_round = args.sites * args.max_batches
    marks = sorted({0, *range(max(1, last // 6), last + 1, max(1, last // 6)), last})
    curve_rows = []
    for r_ in marks:
        row = {"round": r_, "samples processed (windows)": f"{r_ * steps_round * args.batch_size:,}",
               "sent so far (MB)": f"{r_ * info['bytes_per_round'] / 1e6:.1f}"}
        for m in ["central", *methods]:
            ss = seeds if m == "central" else have[m]
            row[f"{m} validation pinball" + ("" if len(ss) == len(seeds) else f" (seeds {', '.join(map(str, ss))})")] = \
                f"{np.mean([res[(s, m)]['validation_curve'][r_] for s in ss]):.4f}"
        curve_rows.append(row)
    vp = _SPLITS["validation"]
    total = args.rounds * steps_round
    missing = [f"{s}/{m}" for s, m, _, _ in jobs if (s, m) not in res]
    txt = (f"Same work, both trained to their best validation checkpoint. Budget: {total} optimiser steps of {args.batch_size} windows summed over "
           f"sites = {total * args.batch_size:,} windows processed ({total * args.batch_size / len(vp.train_o):.2f} epochs of the "
           f"{len(vp.train_o):,} training windows): federated {args.rounds} rounds x {args.sites} sites x {args.max_batches} local steps, central "
           f"{args.rounds} checkpoints x {steps_round} steps over the union; same initial weights per seed, same `fit` loop, Adam lr {args.lr:g}. "
           f"Same early-stopping rule for both: training windows end before the validation period ({vp.info['validation_cutoff']} .. "
           f"{vp.info['heldout_cutoff']}, {args.val_days} trading days), after every round (central: every {steps_round} steps, the same samples) the "
           "validation vol pinball is scored, the lowest checkpoint (round 0 included) is the model, and only it is scored on the held-out period "
           f"(the last 63 trading days, after {p.cutoff:%Y-%m-%d}). The row that decides the 2 % target: "
           "the server learning rate (FedAvgM, 1 = FedAvg) with the lowest mean validation ratio when every candidate finished every seed, "
           "else FedAvg; FedProx's mu is fixed (an extra row). Runs after the central/FedAvg pairs as time allowed. "
           f"Training time summed over the runs {sum(r.get('seconds', 0) for r in res.values()):,.0f} s on 1 thread each, 2 runs at a time, "
           f"under load. {args.sites} sites with disjoint tickers {' | '.join(info['site_tickers'])}. "
           f"Bytes per round {info['bytes_per_round'] / 1e6:.2f} MB (parameters {info['parameter_bytes'] / 1e3:.0f} kB x {args.sites} sites x 2 "
           "directions). Update agreement = ||mean site update|| / mean ||site update|| (1 = alike, "
           f"{args.sites ** -0.5:.2f} = orthogonal)." + (f" Not measured (time): {', '.join(missing)}." if missing else "")
           + "\n\nValidation curve (mean over seeds; the metric the checkpoint is chosen on) against rounds, samples processed and bytes sent:\n\n"
           + markdown_table(curve_rows))
    return markdown_table(rows) + "\n\n" + txt, {"res": res, "decides": decides}


def _fed_job(job: tuple) -> tuple:
    """One training run: (split, seed, method, strategy kwargs) -> (job, held-out/validation vol pinball, info)."""
    split, seed, method, kw, base = job
    torch.set_num_threads(1)
    p = _SPLITS[split]
    cfg = FederateConfig(**base, seed=seed, **kw)
    torch.manual_seed(seed)
    initial = new_model(p, cfg.lr)  # the same initial weights for central and every strategy of this seed
    if method == "central":
        _, m = central_baseline(cfg, p, initial)
        return job, m["val_pinball_vol"], {"seconds": m["seconds"]}
    _, m, _ = federate_model(cfg, p, initial)
    return job, m["val_pinball_vol"], {k: m[k] for k in ("bytes_per_round", "parameter_bytes", "site_tickers", "site_windows", "total_steps", "seconds",
                                                         "update_agreement")}


def _run_jobs(jobs: list, workers: int) -> dict:
    out = {}
    if workers <= 1:
        for j in jobs:
            job, v, info = _fed_job(j)
            out[job[:3]] = (v, info)
            print(job[:3], round(v, 5), flush=True)
        return out
    import multiprocessing as mp
    with mp.get_context("fork").Pool(workers) as pool:
        for job, v, info in pool.imap_unordered(_fed_job, jobs):
            out[job[:3]] = (v, info)
            print(job[:3], round(v, 5), flush=True)
    return out


def _candidates(args) -> dict[str, dict]:
    """Strategy settings compared on the validation period (server lr 1 without momentum = FedAvg)."""
    c = {"fedavg": {"strategy": "fedavg"}}
    for mu in args.mus:
        c[f"fedprox mu={mu:g}"] = {"strategy": "fedprox", "mu": mu}
    for lr in args.server_lrs:
        c[f"fedavgm server-lr={lr:g}"] = {"strategy": "fedavgm", "server_lr": lr, "server_momentum": args.server_momentum}
    return c


def _ratios(res: dict, split: str, seeds: list[int], name: str) -> list[float]:
    return [res[(split, s, name)][0] / res[(split, s, "central")][0] for s in seeds]


def federated_table(args) -> tuple[str, dict]:
    """Choose FedProx's mu and FedAvgM's server learning rate on the validation period (the 63
    trading days before the held-out cutoff, ``validation_split``), then train central, FedAvg and
    the chosen FedProx / FedAvgM once per seed on the full training period and score them on the
    held-out period; the ratio to central is paired per seed (same initial weights, same budget)."""
    from domains.finance.federated import validation_split

    base = dict(rounds=args.rounds, max_batches=args.max_batches, batch_size=args.batch_size, local_epochs=1, sites=args.sites,
                threads=1, lr=args.lr)
    p = prepare(FederateConfig(**base))
    _SPLITS["heldout"], _SPLITS["validation"] = p, validation_split(p, args.val_days)
    cands = _candidates(args)
    sel_jobs = [("validation", s, "central", {}, base) for s in args.select_seeds]
    sel_jobs += [("validation", s, name, kw, base) for s in args.select_seeds for name, kw in cands.items()]
    test_seeds = args.seeds
    fixed = [("heldout", s, "central", {}, base) for s in test_seeds] + [("heldout", s, "fedavg", cands["fedavg"], base) for s in test_seeds]
    if not args.select_seeds:  # no validation runs: central vs FedAvg only (FedAvg has nothing to choose)
        sel_jobs, cands = [], {"fedavg": cands["fedavg"]}
    res = _run_jobs(sel_jobs + fixed, args.workers)  # the held-out runs that need no choice go alongside the validation runs
    val = {name: _ratios(res, "validation", args.select_seeds, name) if args.select_seeds else [float("nan")] for name in cands}
    chosen = {"fedavg": cands["fedavg"]}
    for prefix in ("fedprox", "fedavgm"):
        names = [n for n in cands if n.startswith(prefix)]
        if names:
            best = min(names, key=lambda n: np.mean(val[n]))
            chosen[best] = cands[best]
    test_jobs = [("heldout", s, name, kw, base) for s in test_seeds for name, kw in chosen.items() if name != "fedavg"]
    res.update(_run_jobs(test_jobs, args.workers))
    info = next(v[1] for k, v in res.items() if k[0] == "heldout" and k[2] != "central")
    central = [res[("heldout", s, "central")][0] for s in test_seeds]
    rows = [{"training": "central (same code, all tickers)", "held-out vol pinball": ms(central), "vs central, paired per seed (mean ± sd)": "1",
             "per-seed ratios": "-", "validation ratio": "1", "within 2 %": "-", "update agreement": "-", "rounds": "-", "bytes per round": "-"}]
    out = {"central": central}
    for name in chosen:
        v = [res[("heldout", s, name)][0] for s in test_seeds]
        r = _ratios(res, "heldout", test_seeds, name)
        out[name] = {"pinball": v, "ratios": r, "validation_ratios": val[name]}
        label = name if name == "fedavg" else f"{name} (chosen on validation)"
        rows.append({"training": label, "held-out vol pinball": ms(v), "vs central, paired per seed (mean ± sd)": ms(r),
                     "per-seed ratios": ", ".join(f"{x:.3f}" for x in r), "validation ratio": ms(val[name]) if args.select_seeds else "-",
                     "within 2 %": "met" if np.mean(r) <= 1.02 else f"missed (+{(np.mean(r) - 1) * 100:.1f} %)",
                     "update agreement": f"{np.mean([np.mean(res[('heldout', s, name)][1]['update_agreement']) for s in test_seeds]):.3f}",
                     "rounds": args.rounds,
                     "bytes per round": f"{info['bytes_per_round'] / 1e6:.2f} MB"})
    sel_rows = [{"candidate": n, "validation vol pinball ratio to central": ms(val[n]),
                 "chosen": "yes" if n in chosen and n != "fedavg" else ("baseline" if n == "fedavg" else "")} for n in cands]
    steps = info["total_steps"]
    vp = _SPLITS["validation"]
    txt = (f"{args.sites} sites with disjoint tickers {' | '.join(info['site_tickers'])} (training windows per site {info['site_windows']}). "
           f"Budget per run: {args.rounds} rounds x {args.sites} sites x {args.max_batches} local batches of {args.batch_size} = {steps} optimiser steps "
           f"({steps * args.batch_size:,} windows); central: the same initial weights, {args.rounds} epochs x {args.sites * args.max_batches} batches of "
           f"{args.batch_size} = {steps} steps from all sites' windows; Adam lr {args.lr:g}, each site keeps its Adam state across rounds. "
           f"Held-out: the last 63 trading days (after {p.cutoff:%Y-%m-%d}), seeds {test_seeds}; ratio = federated / central pinball of the same seed "
           f"(lower pinball is better, so < 1 means federated is better). Parameters {info['parameter_bytes'] / 1e3:.0f} kB serialized; "
           f"bytes per round = parameters x {args.sites} sites x 2 directions. Update agreement = ||mean site update|| / mean ||site update||, "
           f"averaged over rounds and seeds (1 = the sites moved alike, {args.sites ** -0.5:.2f} = orthogonal): the client-drift measure. Why the gap: "
           "domains/finance/HISTORY.md, 'Fixed step counts, final weights'.\n\n"
           + (f"Settings chosen on validation only: the {args.val_days} trading days before the held-out cutoff "
              f"({vp.info['validation_cutoff']} .. {vp.info['heldout_cutoff']}), training on the windows whose targets end before it, "
              f"seeds {args.select_seeds}; the lowest mean validation ratio wins:\n\n" + markdown_table(sel_rows) if args.select_seeds
              else "No validation runs (`--select-seeds` empty): central vs FedAvg only, nothing chosen."))
    return markdown_table(rows) + "\n\n" + txt, out


def privacy_table(args) -> tuple[str, dict]:
    base = dict(steps=args.dp_steps, batch_size=args.dp_batch, lr=args.dp_lr, threads=1, seed=args.seeds[0], max_grad_norm=args.clip)
    p = prepare(PrivateConfig(**base))
    torch.manual_seed(args.seeds[0])
    initial = new_model(p, args.dp_lr)
    init = heldout_metrics(initial, p)["val_pinball_vol"]
    rows, res = [], {}
    for eps in (1.0, 3.0, 8.0, math.inf):
        _, m = train_private_model(PrivateConfig(**base, epsilon=eps), p, initial)
        res[eps] = m
        print(eps, m["val_pinball_vol"], m["epsilon"], flush=True)
    ref = res[math.inf]["val_pinball_vol"]
    for eps, m in res.items():
        gap = (init - m["val_pinball_vol"]) / (init - ref) if init != ref else float("nan")
        rows.append({"target ε": "∞ (no noise, no clipping)" if math.isinf(eps) else f"{eps:g}",
                     "ε spent (PRV, δ=1e-5)": "∞" if math.isinf(m["epsilon"]) else f"{m['epsilon']:.2f}",
                     "noise multiplier": f"{m['noise_multiplier']:.3g}", "held-out vol pinball": f"{m['val_pinball_vol']:.4f}",
                     "non-private / private pinball": f"{ref / m['val_pinball_vol']:.3f}",
                     "improvement over the untrained model kept": f"{gap:.2f}", "seconds": m["seconds"]})
    m = res[math.inf]
    txt = (f"DP-SGD from the same initial TFT (untrained: held-out vol pinball {init:.4f}); {args.dp_steps} steps, expected batch {args.dp_batch} "
           f"of {m['training_windows']} windows (sampling rate {m['sample_rate']:.2g}), clip C={args.clip:g}, Adam lr {args.dp_lr:g}, seed {args.seeds[0]}. "
           f"Privacy unit: {m['privacy_unit']} — not a ticker and not a person. '% of the non-private metric' for a loss is reported two ways: "
           "non-private pinball / private pinball, and the fraction of the untrained-to-non-private improvement the private model keeps.")
    return markdown_table(rows) + "\n\n" + txt, res


def medical_privacy_table(args) -> tuple[str, dict]:
    """DP-SGD of the 3D medical UNet (domains.medical.private) at ε ∈ {1, 3, 8, ∞}, small settings."""
    from domains.medical.private import PrivateConfig as MedPrivateConfig, utility_privacy

    cfg = MedPrivateConfig(steps=args.med_steps, batch_size=args.med_batch, patches=args.med_patches, patch=args.med_patch, lr=args.med_lr,
                           max_grad_norm=args.clip, seed=args.seeds[0], track=False)
    res = utility_privacy(cfg)
    ref = res["runs"][math.inf]["test_mean_dice"]
    rows = []
    for eps, m in res["runs"].items():
        rows.append({"target ε": "∞ (no noise, no clipping)" if math.isinf(eps) else f"{eps:g}",
                     f"ε spent ({m['accountant'].upper()}, δ={m['delta']:g})": "∞" if math.isinf(m["epsilon"]) else f"{m['epsilon']:.2f}",
                     "noise multiplier": f"{m['noise_multiplier']:.3g}", "clipped fraction": f"{m['clipped_fraction']:.2f}",
                     "held-out mean Dice": f"{m['test_mean_dice']:.3f}", "vs non-private": f"{100 * m['test_mean_dice'] / ref:.1f}%",
                     "target ≥ 90 % at ε = 8": ("met" if m["test_mean_dice"] >= 0.9 * ref else "missed") if eps == 8 else "",
                     "CPU s/step (median)": f"{m['step_cpu_s']:.2f}", "seconds": m["seconds"]})
    c, m = res["cost"], res["runs"][math.inf]
    txt = (f"MONAI 3D UNet channels {cfg.channels} ({res['params']:,} parameters, InstanceNorm), random init (held-out mean Dice "
           f"{res['initial']['test_mean_dice']:.3f}); a fixed set of {m['training_patches']} foreground-balanced {cfg.patch}³ patches at "
           f"{cfg.spacing:g} mm drawn once from the training volume; {cfg.steps} steps, Poisson sampling rate {m['sample_rate']:.3g} "
           f"(expected batch {cfg.batch_size}), clip C={cfg.max_grad_norm:g}, Adam lr {cfg.lr:g}, seed {cfg.seed}; per-patch gradients by Opacus's "
           f"GradSampleModule (hooks), clipping and noise by its DPOptimizer, ε from its PRV accountant. Held-out: the task's test volume "
           f"(sliding window, mean foreground Dice). Privacy unit: {m['privacy_unit']}. Settings not tuned (none chosen on the test volume).\n\n"
           f"Cost of per-patch gradients (batch {cfg.batch_size}, same model): {c['per-sample_step_cpu_s']:.2f} CPU s per forward+backward vs "
           f"{c['plain_step_cpu_s']:.2f} s plain ({c['per-sample_step_cpu_s'] / c['plain_step_cpu_s']:.1f}×); per-sample gradient buffers "
           f"{c['grad_sample_mb']:.0f} MB vs {c['grad_mb']:.1f} MB of ordinary gradients ({cfg.batch_size}×).")
    return markdown_table(rows) + "\n\n" + txt, res


def _dp_row(label: str, trained: str, eps: float, m: dict, ref: float) -> dict:
    return {"starting point": label, "DP-trained parameters": trained, "target ε": "∞ (no noise, no clipping)" if math.isinf(eps) else f"{eps:g}",
            f"ε spent ({m['accountant'].upper()}, δ={m['delta']:g})": "∞" if math.isinf(m["epsilon"]) else f"{m['epsilon']:.2f}",
            "noise multiplier": f"{m['noise_multiplier']:.3g}", "clipped fraction": f"{m['clipped_fraction']:.2f}",
            "held-out mean Dice": f"{m['test_mean_dice']:.3f}", "vs non-private, same recipe": f"{100 * m['test_mean_dice'] / ref:.1f}%",
            "target ≥ 90 % at ε = 8": ("met" if m["test_mean_dice"] >= 0.9 * ref else "missed") if eps == 8 else "",
            "CPU s/step (median)": f"{m['step_cpu_s']:.2f}", "seconds": m["seconds"]}


def medical_privacy_public_table(args) -> tuple[str, dict]:
    """The public-pretraining + private-fine-tuning recipe (domains.medical.private, ``init="public"``):
    the UNet trained without privacy on images synthesised only from the label map, then DP-SGD of
    ``--med-trainable`` on the private patches at ε ∈ {1, 3, 8, ∞}; all parameters from the same public
    model and the from-scratch recipe (all parameters, random init) in the same run, beside it."""
    from domains.medical.private import PrivateConfig as MedPrivateConfig, utility_privacy

    cfg = MedPrivateConfig(steps=args.med_steps, batch_size=args.med_batch, patches=args.med_patches, patch=args.med_patch, lr=args.med_ft_lr,
                           max_grad_norm=args.clip, seed=args.seeds[0], track=False, init="public", trainable=args.med_trainable,
                           public_steps=args.med_public_steps, public_lr=args.med_lr)
    also = tuple(t for t in args.med_also if t != args.med_trainable)
    res = utility_privacy(cfg, also=also, scratch=tuple(args.med_scratch_eps), scratch_lr=args.med_lr)
    n = res["params"]
    names = {"last": "last up-sampling block", "all": "all"}
    rows = [{"starting point": "public model, before any private training", "DP-trained parameters": "none", "target ε": "0 (private data unused)",
             "held-out mean Dice": f"{res['initial']['test_mean_dice']:.3f}"}]
    groups = [("public model (adopted recipe)", cfg.trainable, res["runs"])] + [("public model (shown, not adopted)", t, r) for t, r in res["also"].items()]
    for label, trainable, runs in groups:
        ref = runs[math.inf]["test_mean_dice"]
        k = next(iter(runs.values()))["trainable_params"]
        for eps, m in runs.items():
            rows.append(_dp_row(label, f"{names.get(trainable, trainable)} ({k:,}, {100 * k / n:.1f} %)", eps, m, ref))
    if res["scratch"]:
        sref = res["scratch"].get(math.inf, {}).get("test_mean_dice")
        for eps, m in res["scratch"].items():
            rows.append(_dp_row(f"random init (previous recipe, Adam lr {m['lr']:g})", f"all ({n:,}, 100 %)", eps, m, sref or float("nan")))
    m8, minf, p = res["runs"].get(8.0), res["runs"][math.inf], res["public"]
    c = res["cost"]
    txt = (f"MONAI 3D UNet channels {cfg.channels} ({n:,} parameters, InstanceNorm). **Public data** (no privacy needed): {p['public_data']}. "
           f"Public pretraining: {p['public_steps']} non-private Adam steps (lr {p['public_lr']:g}) of {cfg.batch_size} synthetic {cfg.patch}³ patches "
           f"at {cfg.spacing:g} mm, {p['public_seconds']:.0f} s. **Private data**: a fixed set of {minf['training_patches']} foreground-balanced "
           f"{cfg.patch}³ patches of the real training T1 drawn once (the previous table's); privacy unit: {minf['privacy_unit']}; the ε covers the "
           f"private fine-tuning. DP-SGD: {cfg.steps} steps, Poisson sampling rate {minf['sample_rate']:.3g} (expected batch {cfg.batch_size}), "
           f"clip C={cfg.max_grad_norm:g}, Adam lr {cfg.lr:g}, seed {cfg.seed}; Opacus GradSampleModule on the trained parameters only, DPOptimizer, "
           f"PRV accountant. 'vs non-private, same recipe' = Dice / the ε = ∞ row of the same starting point and parameter set. Held-out: the "
           f"task's test volume (sliding window, mean foreground Dice). The recipe (public data, parameter set, steps, learning rates) was fixed "
           f"before the run; nothing was tuned on the test volume (the bundled task has no validation volume).")
    if m8 and res["scratch"].get(math.inf):
        txt += (f"\n\nAt ε = 8 the adopted recipe scores {m8['test_mean_dice']:.3f}: {100 * m8['test_mean_dice'] / minf['test_mean_dice']:.1f} % of "
                f"its own non-private reference and {100 * m8['test_mean_dice'] / res['scratch'][math.inf]['test_mean_dice']:.1f} % of the non-private "
                f"from-scratch model of the same step budget ({res['scratch'][math.inf]['test_mean_dice']:.3f}); the public model alone scores "
                f"{res['initial']['test_mean_dice']:.3f}.")
    txt += (f"\n\nCost of per-patch gradients for the adopted parameter set (batch {cfg.batch_size}): {c['per-sample_step_cpu_s']:.2f} CPU s per "
            f"forward+backward vs {c['plain_step_cpu_s']:.2f} s plain; per-sample gradient buffers {c['grad_sample_mb']:.2f} MB.")
    return markdown_table(rows, columns=list(rows[-1])) + "\n\n" + txt, res


def _header(t0: float) -> str:
    argv = list(sys.argv[1:])
    if "--note" in argv[:-1]:  # the note is printed above the table; the command line only names the flag
        argv[argv.index("--note") + 1] = "'<the paragraph below>'"
    args = (" " + " ".join(argv)) if argv else ""
    return (f"`.venv/bin/python bench/trust.py{args}` — {machine_line()}; under load; torch threads 1 "
            f"per process; total {time.time() - t0:.0f} s.\nMeasured under load from other agents on a shared 2-core machine: the seconds are "
            "not speed figures; the metric ratios inside one run are fair.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    ap.add_argument("--part", choices=["all", "federated", "privacy", "medical-privacy", "medical-privacy-public"], default="all",
                    help="which sub-section of the trust section to measure and rewrite (the other stays as it is)")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--max-batches", type=int, default=5, help="local batches per site and round")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--sites", type=int, default=3)
    ap.add_argument("--mus", type=float, nargs="*", default=[0.01, 0.1], help="FedProx mu candidates (chosen on validation; "
                    "--early-stopping: fixed extra rows run after the pairs); `--mus` alone: no FedProx")
    ap.add_argument("--server-lrs", type=float, nargs="+", default=[1.5, 2.0], help="FedAvgM server learning-rate candidates (chosen on validation)")
    ap.add_argument("--server-momentum", type=float, default=0.0)
    ap.add_argument("--val-days", type=int, default=63, help="validation period: trading days before the held-out cutoff")
    ap.add_argument("--select-seeds", type=int, nargs="*", default=[0], help="seeds of the validation runs that choose mu / server lr "
                    "(none: no validation runs, central vs FedAvg only)")
    ap.add_argument("--section", default="trust-federated", help="the BENCHMARKS.md block the federated table goes to")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--workers", type=int, default=1, help="federated runs in parallel (forked processes, 1 torch thread each)")
    ap.add_argument("--dp-steps", type=int, default=15)
    ap.add_argument("--dp-batch", type=int, default=16)
    ap.add_argument("--dp-lr", type=float, default=1e-2)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--skip-dp", action="store_true", help="same as --part federated")
    ap.add_argument("--med-public-steps", type=int, default=1000, help="medical DP, public recipe: non-private pretraining steps on synthetic patches "
                    "(at --med-lr)")
    ap.add_argument("--med-ft-lr", type=float, default=1e-3, help="medical DP, public recipe: Adam learning rate of the private fine-tuning")
    ap.add_argument("--med-trainable", default="last", choices=["last", "all"], help="medical DP, public recipe: parameters DP-SGD trains")
    ap.add_argument("--med-also", nargs="*", default=["all"], help="medical DP, public recipe: other parameter sets shown from the same public model")
    ap.add_argument("--med-scratch-eps", type=float, nargs="*", default=[8.0, math.inf],
                    help="medical DP, public recipe: target εs also run from random init (the previous recipe), in the same run")
    ap.add_argument("--med-steps", type=int, default=60, help="medical DP: DP-SGD steps")
    ap.add_argument("--med-batch", type=int, default=8, help="medical DP: expected patches per step")
    ap.add_argument("--med-patch", type=int, default=24, help="medical DP: cubic patch side (voxels at 3 mm)")
    ap.add_argument("--med-patches", type=int, default=256, help="medical DP: training patches (the privacy unit is one patch)")
    ap.add_argument("--med-lr", type=float, default=3e-3, help="medical DP: Adam learning rate")
    ap.add_argument("--early-stopping", action="store_true", help="federated: same work, both keep their best validation checkpoint "
                    "(train before the validation period, score it every round, held-out scored once); FedAvgM's server lr chosen on validation")
    ap.add_argument("--cache", default="", help="--early-stopping: JSON-lines file of finished runs (default runs/bench/<section>.jsonl); "
                    "runs already in it are not repeated")
    ap.add_argument("--from-cache", action="store_true", help="--early-stopping: render the table from --cache only, train nothing")
    ap.add_argument("--does-not-decide", action="store_true", help="--early-stopping: a budget pre-registered as an extra; "
                    "the rows say so and the 2 %% column never says met/missed")
    ap.add_argument("--pool-with", nargs="*", default=[], help="--early-stopping: other --cache files of the SAME protocol; adds an "
                    "information row of FedAvg's ratios over their seeds and this table's (never met/missed)")
    ap.add_argument("--note", default="", help="--early-stopping: a paragraph printed above the table (e.g. what was pre-registered)")
    ap.add_argument("--no-write", action="store_true", help="print the tables, leave BENCHMARKS.md alone")
    args = ap.parse_args()
    if args.skip_dp:
        args.part = "federated"
    torch.set_num_threads(1)
    blocks = {}
    if args.part in ("all", "federated") and args.early_stopping:
        t0 = time.time()
        fed, _ = federated_early_stopping_table(args)
        extra = " (extra budget, does not decide the target)" if args.does_not_decide else ""
        note = f"{args.note}\n\n" if args.note else ""
        blocks[args.section] = (f"### Federated (Flower) vs central, same work, both early-stopped on validation: {args.rounds} rounds{extra}\n\n"
                                f"{_header(t0)}\n\n{note}{fed}")
    elif args.part in ("all", "federated"):
        t0 = time.time()
        fed, _ = federated_table(args)
        blocks[args.section] = f"### Federated (Flower) vs central, same budget: {args.rounds} rounds\n\n{_header(t0)}\n\n{fed}"
    if args.part in ("all", "privacy"):
        t0 = time.time()
        dp, _ = privacy_table(args)
        blocks["trust-privacy"] = f"### Utility-privacy (Opacus DP-SGD)\n\n{_header(t0)}\n\n{dp}"
    if args.part == "medical-privacy":  # not in "all": a separate, slower measurement with its own section
        t0 = time.time()
        md, _ = medical_privacy_table(args)
        blocks["trust-medical-privacy"] = f"## Utility-privacy of the medical 3D UNet (Opacus DP-SGD)\n\n{_header(t0)}\n\n{md}"
    if args.part == "medical-privacy-public":  # own section: public pretraining + private fine-tuning of few parameters
        t0 = time.time()
        md, _ = medical_privacy_public_table(args)
        blocks["trust-medical-privacy-public"] = (f"## Utility-privacy of the medical 3D UNet: public pretraining + private fine-tuning (Opacus DP-SGD)"
                                                  f"\n\n{_header(t0)}\n\n{md}")
    if args.no_write:
        print("\n\n".join(blocks.values()))
        return
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.is_file() else ""
    if not all(f"<!-- bench:{k}:start -->" in text for k in ("trust-federated", "trust-privacy")):
        empty = "_(not run yet: `bench/trust.py --part {}`)_"
        write_benchmark_section("trust", "## Trust: federated and differentially private training (finance TFT)\n\n" + "\n\n".join(
            f"<!-- bench:{k}:start -->\n{empty.format(k.split('-')[1])}\n<!-- bench:{k}:end -->" for k in ("trust-federated", "trust-privacy")))
    for k, md in blocks.items():
        write_benchmark_section(k, md)
        print(md)


if __name__ == "__main__":
    main()
