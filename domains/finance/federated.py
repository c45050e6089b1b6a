"""Federated training of the finance TFT on Flower: the library under ``python -m domains.finance.federate``.

Sites hold disjoint groups of tickers of the panel (:func:`site_tickers`, round-robin over the
sorted tickers); every site trains the registry's TFT with the same loop as central training
(``model.fit``, Adam, gradient clipping) on its own tickers' windows before the held-out cutoff;
Flower's ``FedAvg`` or ``FedProx`` (``core.federated``) averages the weights each round. The server
evaluates the global model on the common held-out period (``trust.heldout_metrics``) after every
round. :func:`central_baseline` trains the same initial model centrally on the same budget
(rounds x local epochs x sites x batches = epochs x batches, same batch size and learning rate).

What stays shared: the public market inputs (index return, VIX, WTI) and the calendar; per-ticker
normalisers are fitted on each ticker's own history, so a site needs only its tickers' prices.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import torch

from core.config import RunConfig, SeedConfig, TrackingConfig
from core.federated import STRATEGIES, TorchClient, connect, free_port, get_arrays, make_strategy, parameters_bytes, serve, set_arrays, simulate, track_updates
from core.logging import get_logger
from domains.finance.config import DataConfig, ModelConfig, ThreadsConfig
from domains.finance.data import PriceDataError
from domains.finance.model import fit
from domains.finance.trust import Prepared, TrustDataConfig, heldout_metrics, new_model, prepare

__all__ = ["FederateConfig", "site_tickers", "site_origins", "site_client", "federate_model", "central_baseline", "run_site", "validation_split"]

log = get_logger("finance.federated")


@dataclass
class FederateConfig(TrustDataConfig, ModelConfig, DataConfig, ThreadsConfig, TrackingConfig, SeedConfig, RunConfig):
    sites: int = field(default=3, metadata={"help": "simulated sites, each holding a disjoint group of tickers"})
    rounds: int = field(default=4, metadata={"help": "federated rounds"})
    local_epochs: int = field(default=1, metadata={"help": "local epochs per site and round"})
    batch_size: int = field(default=128, metadata={"help": "windows per batch"})
    max_batches: int = field(default=17, metadata={"help": "batches per local epoch and site (0 = all the site's windows)"})
    lr: float = field(default=3e-3, metadata={"help": "Adam learning rate (each site keeps its optimizer state across rounds)"})
    weight_decay: float = field(default=1e-5, metadata={"help": "Adam weight decay at the sites (central training's 1e-5); a diagnostic knob: Adam normalises "
                                                                  "the decay gradient of parameters a site has no data for (other sites' ticker embeddings)"})
    strategy: str = field(default="fedavg", metadata={"help": "Flower strategy", "choices": list(STRATEGIES)})
    mu: float = field(default=0.01, metadata={"help": "FedProx proximal weight mu (the local loss gets mu/2 ||w - w_global||^2)"})
    server_lr: float = field(default=1.0, metadata={"help": "fedavgm: server learning rate on the averaged update (FedAvgM)"})
    server_momentum: float = field(default=0.0, metadata={"help": "fedavgm: server momentum"})
    split: str = field(default="tickers", metadata={"help": "tickers: each site holds a disjoint group of tickers (the deployment case); windows: each site a random "
                                                          "disjoint third of every ticker's windows (an IID control that measures what the ticker split costs)",
                                                  "choices": ["tickers", "windows"]})
    mode: str = field(default="simulation", metadata={"help": "simulation: all sites in this process; processes: Flower's gRPC server on 127.0.0.1 and one OS process per site",
                                                      "choices": ["simulation", "processes"]})
    compare_central: bool = field(default=False, metadata={"help": "also train centrally on the same budget and report the ratio"})
    early_stopping: bool = field(default=False, metadata={"help": "train on the windows before a validation period (the --val-days trading days before the "
                                                                  "held-out cutoff), score it after every round (central: every sites x max-batches steps) and "
                                                                  "keep the best checkpoint; the held-out period is scored once, with that checkpoint"})
    site: int = field(default=-1, metadata={"help": "internal (--mode processes): run as this site's Flower client"})
    server: str = field(default="", metadata={"help": "internal (--mode processes): the Flower server address a site connects to"})


def site_tickers(tickers: list[str], sites: int) -> list[list[str]]:
    """Disjoint, non-empty ticker groups: round-robin over the sorted tickers."""
    tickers = sorted(tickers)
    if sites < 1 or sites > len(tickers):
        raise PriceDataError(f"--sites {sites}: must be between 1 and the number of tickers ({len(tickers)})")
    return [tickers[i::sites] for i in range(sites)]


def validation_split(p: Prepared, days: int = 63) -> Prepared:
    """The selection split inside the training period: the last ``days`` trading days before the
    held-out cutoff become the validation period (origins dated after the validation cutoff whose
    targets all lie before the held-out cutoff), training keeps the windows whose targets end by the
    validation cutoff. Nothing of the held-out (test) period is read: settings (server learning rate,
    local steps, mu) are chosen on this split, then trained and scored once on the held-out period."""
    dates = np.sort(p.feat["date"].unique())
    dates = dates[dates <= np.datetime64(p.cutoff)]
    if days <= 0 or days >= len(dates) - p.spec.encoder_length - p.spec.horizon:
        raise PriceDataError(f"validation days {days}: must be > 0 and leave a training history ({len(dates)} trading days before the held-out cutoff)")
    vcut = pd.Timestamp(dates[-1 - days])
    train = p.train_o[p.T.targets_by(p.train_o, vcut)]
    val = p.train_o[p.T.dates[p.train_o] > np.datetime64(vcut)]
    if not len(train) or not len(val):
        raise PriceDataError(f"no training or validation windows around {vcut:%Y-%m-%d}")
    return dataclasses.replace(p, cutoff=vcut, train_o=train, val_o=val, info={**p.info, "validation_cutoff": str(vcut.date()), "heldout_cutoff": str(p.cutoff.date())})


def _site_seed(seed: int, site: int, server_round: int) -> int:
    return seed * 10_007 + server_round * 101 + site


def site_origins(cfg: FederateConfig, p: Prepared, site: int, groups: list[list[str]] | None = None) -> np.ndarray:
    """The training windows site ``site`` holds: its tickers' windows (``--split tickers``) or, as the
    IID control (``--split windows``), a disjoint random 1/sites of all windows (the same permutation
    at every site, from the seed, so the shares partition the training windows)."""
    if cfg.split == "windows":
        perm = np.random.default_rng(cfg.seed).permutation(len(p.train_o))
        return np.sort(p.train_o[perm[site::cfg.sites]])
    groups = groups or site_tickers(p.tickers, cfg.sites)
    return p.train_o[np.isin(p.T.tickers[p.train_o], groups[site])]


def site_client(cfg: FederateConfig, p: Prepared, site: int, groups: list[list[str]] | None = None) -> TorchClient:
    """Site ``site``'s Flower client: a TFT of the same registry entry, trained with ``model.fit``
    on the windows of its tickers only."""
    origins = site_origins(cfg, p, site, groups)
    if not len(origins):
        raise PriceDataError(f"site {site} ({', '.join(groups[site])}) has no training windows before {p.cutoff:%Y-%m-%d}")
    model = new_model(p, cfg.lr)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def train_fn(m, server_round: int, config: dict):
        losses = fit(m, p.T, origins, epochs=cfg.local_epochs, batch_size=cfg.batch_size, max_batches=cfg.max_batches or None, lr=cfg.lr,
                     seed=_site_seed(cfg.seed, site, server_round), optimizer=opt, desc=f"site {site} round {server_round}")
        return len(origins), {"train_pinball": float(losses[-1])}

    return TorchClient(model, train_fn, name=f"site{site}")


def _evaluator(p: Prepared, model: torch.nn.Module, history: list[dict], final: dict):
    """Flower's server-side evaluation: score the global weights on ``p``'s evaluation period every
    round; ``final["arrays"]`` = the latest weights, ``final["best"]`` = (pinball, round, weights) of
    the lowest pinball so far (the early-stopping checkpoint when ``p`` is the validation split)."""
    def evaluate(server_round: int, arrays, config):
        set_arrays(model, arrays)
        m = heldout_metrics(model, p)
        history.append({"round": server_round, **m})
        final["arrays"] = [np.array(a, copy=True) for a in arrays]
        if "best" not in final or m["val_pinball_vol"] < final["best"][0]:
            final["best"] = (m["val_pinball_vol"], server_round, final["arrays"])
        log.info(f"round {server_round}: {'validation' if 'heldout_cutoff' in p.info else 'held-out'} vol pinball {m['val_pinball_vol']:.4f}")
        return m["val_pinball_vol"], m

    return evaluate


def _early_stopped(metrics: dict, model: torch.nn.Module, heldout: Prepared, best: tuple[float, int], curve: list[float]) -> dict:
    """Metrics of the best-on-validation checkpoint ``model``: its held-out metrics (read once, here),
    the validation pinball and round it was chosen at, and the validation curve."""
    return {**metrics, **heldout_metrics(model, heldout), "validation_pinball_vol": best[0], "best_round": best[1],
            "validation_curve": [round(float(v), 5) for v in curve], "cutoff": str(heldout.cutoff.date()), "early_stopping": True}


def federate_model(cfg: FederateConfig, p: Prepared, initial: torch.nn.Module, run=None, heldout: Prepared | None = None) -> tuple[torch.nn.Module, dict, list[dict]]:
    """Train ``initial`` (left unchanged) federatedly; returns (global model, metrics, per-round history).

    With ``heldout`` (early stopping), ``p`` is the validation split of ``heldout``
    (:func:`validation_split`): the sites train on ``p``'s training windows, the server scores
    ``p``'s validation period after every round, and the returned model is the round with the
    lowest validation vol pinball, scored once on ``heldout``'s held-out period."""
    groups = site_tickers(p.tickers, cfg.sites)
    init = get_arrays(initial)
    model = copy.deepcopy(initial)
    history: list[dict] = []
    final: dict = {}
    strategy = make_strategy(cfg.strategy, init, cfg.sites, mu=cfg.mu, server_lr=cfg.server_lr, server_momentum=cfg.server_momentum, evaluate_fn=_evaluator(p, model, history, final))
    agreement: list[dict] = []
    track_updates(strategy, lambda: final.get("arrays", init), agreement)
    t0 = time.perf_counter()
    if cfg.mode == "simulation":
        simulate(strategy, [site_client(cfg, p, i, groups) for i in range(cfg.sites)], cfg.rounds)
    else:
        _serve_with_site_processes(cfg, strategy)
    seconds = time.perf_counter() - t0
    if len(history) != cfg.rounds + 1:
        raise RuntimeError(f"federated training ended after {len(history) - 1} of {cfg.rounds} rounds")
    set_arrays(model, final["best"][2] if heldout is not None else final["arrays"])
    if run is not None:
        for h in history:
            run.log_metrics({"val_pinball_vol": h["val_pinball_vol"]}, step=h["round"])
    size = parameters_bytes(init)
    steps = cfg.rounds * cfg.local_epochs * cfg.sites * cfg.max_batches if cfg.max_batches else None
    metrics = {**history[-1], "strategy": cfg.strategy, "mu": cfg.mu if cfg.strategy == "fedprox" else 0.0, "mode": cfg.mode,
               "sites": cfg.sites, "split": cfg.split, "rounds": cfg.rounds, "local_epochs": cfg.local_epochs, "site_tickers": [",".join(g) for g in groups],
               "site_windows": [int(np.isin(p.T.tickers[p.train_o], g).sum()) for g in groups] if cfg.split == "tickers" else [len(p.train_o[i::cfg.sites]) for i in range(cfg.sites)], "parameter_bytes": size,
               "bytes_per_round": 2 * cfg.sites * size, "total_steps": steps, "seconds": round(seconds, 1), "cutoff": str(p.cutoff.date()),
               "update_agreement": [round(a["update_agreement"], 4) for a in agreement]}
    metrics.pop("round", None)
    if heldout is not None:
        metrics = _early_stopped(metrics, model, heldout, final["best"][:2], [h["val_pinball_vol"] for h in history])
    return model, metrics, history


def central_baseline(cfg: FederateConfig, p: Prepared, initial: torch.nn.Module, heldout: Prepared | None = None) -> tuple[torch.nn.Module, dict]:
    """The same initial model trained centrally on all sites' windows with the same budget:
    ``rounds * local_epochs`` epochs of ``sites * max_batches`` batches (the samples the sites
    process together). With ``heldout`` the same early-stopping rule as :func:`federate_model`:
    ``p`` is the validation split, scored after every epoch (= the samples of one federated round,
    with ``local_epochs`` 1), the best checkpoint is kept and scored once on ``heldout``."""
    model = copy.deepcopy(initial)
    t0 = time.perf_counter()
    curve: list[float] = []
    best: dict = {}

    def checkpoint(epoch: int) -> None:
        v = heldout_metrics(model, p)["val_pinball_vol"]  # sets eval mode
        curve.append(v)
        if not best or v < best["v"]:
            best.update(v=v, round=epoch, state=copy.deepcopy(model.state_dict()))
        model.train()

    if heldout is not None:
        checkpoint(0)
    fit(model, p.T, p.train_o, epochs=cfg.rounds * cfg.local_epochs, batch_size=cfg.batch_size,
        max_batches=cfg.sites * cfg.max_batches if cfg.max_batches else None, lr=cfg.lr, seed=cfg.seed, desc="central",
        on_epoch_end=(lambda epoch, loss, opt: checkpoint(epoch + 1)) if heldout is not None else None)
    model.eval()
    if heldout is None:
        return model, {**heldout_metrics(model, p), "seconds": round(time.perf_counter() - t0, 1)}
    model.load_state_dict(best["state"])
    return model, _early_stopped({"seconds": round(time.perf_counter() - t0, 1)}, model, heldout, (best["v"], best["round"]), curve)


def _client_config_file(cfg: FederateConfig) -> str:
    skip = {"name", "runs_dir", "track", "site", "server", "mode", "compare_central", "resume"}
    fd, path = tempfile.mkstemp(prefix="federate-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump({k: v for k, v in asdict(cfg).items() if k not in skip}, f)
    return path


def _serve_with_site_processes(cfg: FederateConfig, strategy) -> None:
    """Flower's gRPC server on a free 127.0.0.1 port, one ``python -m domains.finance.federate
    --site i --server ...`` process per site; a site that dies stops the server."""
    port = free_port()
    conf = _client_config_file(cfg)
    procs = [subprocess.Popen([sys.executable, "-m", "domains.finance.federate", "--config", conf, "--site", str(i),
                               "--server", f"127.0.0.1:{port}"]) for i in range(cfg.sites)]
    failed: list[int] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            for i, pr in enumerate(procs):
                if pr.poll() not in (None, 0) and not done.is_set():
                    failed.append(i)
                    os.kill(os.getpid(), signal.SIGINT)  # start_server blocks: interrupt it
                    return
            time.sleep(0.5)

    threading.Thread(target=watch, daemon=True).start()
    try:
        serve(strategy, cfg.rounds, port)
    except KeyboardInterrupt:
        if failed:
            raise RuntimeError(f"site process {failed[0]} exited with code {procs[failed[0]].returncode}") from None
        raise
    finally:
        done.set()
        for pr in procs:
            try:
                pr.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pr.kill()
        os.unlink(conf)


def run_site(cfg: FederateConfig) -> None:
    """A site's Flower client process (``--mode processes``): connect to ``cfg.server`` and train
    when asked until the server ends."""
    torch.manual_seed(cfg.seed)  # the weights come from the server; this only fixes dropout
    p = prepare(cfg)
    if cfg.early_stopping:  # the server stops on validation: the sites train on the windows before it
        p = validation_split(p, cfg.val_days)
    connect(site_client(cfg, p, cfg.site), cfg.server)
