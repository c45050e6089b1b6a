"""Trust bench (issue 17): federated vs central training and the utility-privacy table of the
finance TFT. Writes the "trust" section of BENCHMARKS.md:

    .venv/bin/python bench/trust.py                     # small default budget (~10 min on 2 busy cores)
    .venv/bin/python bench/trust.py --rounds 8 --max-batches 20 --dp-steps 200 --dp-batch 64

Federated: 3 sites with disjoint ticker groups of the bundled panel, Flower's FedAvg and FedProx
(in-process simulation through Flower's Server), against central training of the same initial
model on the same budget (rounds x sites x batches steps of the same batch size); metric: held-out
vol pinball (last 63 trading days, lower is better), mean ± sd over seeds.
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

from core.bench import machine_line, markdown_table, write_benchmark_section  # noqa: E402
from domains.finance.federated import FederateConfig, central_baseline, federate_model  # noqa: E402
from domains.finance.private import PrivateConfig, train_private_model  # noqa: E402
from domains.finance.trust import heldout_metrics, new_model, prepare  # noqa: E402


def ms(v: list[float]) -> str:
    return f"{np.mean(v):.4f} ± {np.std(v, ddof=1):.4f}" if len(v) > 1 else f"{v[0]:.4f}"


def federated_table(args) -> tuple[str, dict]:
    base = dict(rounds=args.rounds, max_batches=args.max_batches, batch_size=args.batch_size, local_epochs=1, sites=3, threads=1)
    p = prepare(FederateConfig(**base))
    res: dict[str, list] = {"central": [], "fedavg": [], "fedprox": []}
    info = {}
    for seed in args.seeds:
        cfg = FederateConfig(**base, seed=seed)
        torch.manual_seed(seed)
        initial = new_model(p, cfg.lr)
        _, c = central_baseline(cfg, p, initial)
        res["central"].append(c["val_pinball_vol"])
        for strat in ("fedavg", "fedprox"):
            cfg = FederateConfig(**base, seed=seed, strategy=strat, mu=args.mu)
            _, m, _ = federate_model(cfg, p, initial)
            res[strat].append(m["val_pinball_vol"])
            info = m
        print({k: v[-1] for k, v in res.items()}, flush=True)
    rows = []
    for name, v in res.items():
        rel = [a / b for a, b in zip(v, res["central"])]
        rows.append({"training": name if name != "fedprox" else f"fedprox (mu={args.mu:g})", "held-out vol pinball": ms(v),
                     "vs central (ratio, 1 = equal)": ms(rel) if name != "central" else "1",
                     "rounds": args.rounds if name != "central" else "-",
                     "bytes per round": f"{info['bytes_per_round'] / 1e6:.2f} MB" if name != "central" else "-"})
    txt = (f"3 sites, tickers {' | '.join(info['site_tickers'])} (windows per site {info['site_windows']}); budget per run: "
           f"{args.rounds} rounds x 3 sites x {args.max_batches} batches of {args.batch_size} = {info['total_steps']} steps "
           f"(central: {args.rounds} epochs x {3 * args.max_batches} batches); seeds {args.seeds}; parameters {info['parameter_bytes'] / 1e3:.0f} kB serialized, "
           f"bytes per round = parameters x 3 sites x 2 directions.")
    return markdown_table(rows) + "\n\n" + txt, res


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--max-batches", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--mu", type=float, default=0.01)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--dp-steps", type=int, default=15)
    ap.add_argument("--dp-batch", type=int, default=16)
    ap.add_argument("--dp-lr", type=float, default=1e-2)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--skip-dp", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.time()
    fed, _ = federated_table(args)
    dp = "_(not run)_" if args.skip_dp else privacy_table(args)[0]
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "unknown CPU")
    md = f"""## Trust: federated and differentially private training (finance TFT)

`.venv/bin/python bench/trust.py{(' ' + ' '.join(sys.argv[1:])) if sys.argv[1:] else ''}` — {machine_line()}; CPU: {cpu}; torch threads 1; total {time.time() - t0:.0f} s.
Measured under load from other agents on a shared 2-core machine: the seconds are not speed figures; the metric ratios inside one run are fair.

### Federated (Flower) vs central, same budget

{fed}

### Utility-privacy (Opacus DP-SGD)

{dp}
"""
    write_benchmark_section("trust", md)
    print(md)


if __name__ == "__main__":
    main()
