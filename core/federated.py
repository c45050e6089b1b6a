"""Federated training on Flower (``flwr``): the domain-agnostic glue.

A domain supplies a model and a ``train_fn(model, server_round, config) -> (num_examples, metrics)``
(its own training loop, unchanged); this module turns that into a Flower client
(:class:`TorchClient`), builds Flower's strategies (``FedAvg``, ``FedProx``, :func:`make_strategy`)
and runs them in one of two ways:

* :func:`simulate` — every site in this process: Flower's own ``Server`` loop and strategy
  (``configure_fit`` / ``aggregate_fit`` on real ``FitIns``/``FitRes``/``Parameters``) drive
  in-process client proxies, one site after the other (deterministic, no Ray);
* :func:`serve` — Flower's gRPC server bound to ``127.0.0.1``; each site is a separate OS process
  that calls :func:`connect` (Flower's ``start_client``).

FedProx: Flower's ``FedProx`` strategy sends ``proximal_mu`` to the clients; :class:`TorchClient`
adds the proximal term ``mu/2 * ||w - w_global||^2`` to the local loss by adding its gradient
``mu * (w - w_global)`` to every parameter's gradient (:func:`proximal_term`), so the domain's
training loop needs no change.
"""

from __future__ import annotations

import contextlib
import socket
import warnings
from typing import Any, Callable, Iterator

import numpy as np
import torch

__all__ = ["get_arrays", "set_arrays", "proximal_term", "TorchClient", "make_strategy", "parameters_bytes", "simulate", "serve",
           "connect", "free_port", "update_agreement", "track_updates", "STRATEGIES"]

STRATEGIES = ("fedavg", "fedprox", "fedavgm")
warnings.filterwarnings("ignore", category=DeprecationWarning, module="flwr")


def get_arrays(model: torch.nn.Module) -> list[np.ndarray]:
    """The model's state (parameters and buffers, ``state_dict`` order) as numpy arrays."""
    return [v.detach().cpu().numpy().copy() for v in model.state_dict().values()]


def set_arrays(model: torch.nn.Module, arrays: list[np.ndarray]) -> None:
    """Copy ``arrays`` (``get_arrays`` order) into the model in place (optimizer state stays bound)."""
    state = model.state_dict()
    if len(arrays) != len(state):
        raise ValueError(f"{len(arrays)} arrays for a model with {len(state)} state entries")
    with torch.no_grad():
        for (name, v), a in zip(state.items(), arrays):
            v.copy_(torch.as_tensor(a, dtype=v.dtype).reshape(v.shape))


@contextlib.contextmanager
def proximal_term(model: torch.nn.Module, mu: float) -> Iterator[None]:
    """Inside the block, every backward pass adds ``mu * (w - w0)`` to each trainable parameter's
    gradient, ``w0`` = the weights on entry: the gradient of FedProx's ``mu/2 ||w - w0||^2``."""
    if mu <= 0:
        yield
        return
    handles = []
    for p in model.parameters():
        if p.requires_grad:
            w0 = p.detach().clone()
            handles.append(p.register_hook(lambda g, p=p, w0=w0: g + mu * (p.detach() - w0)))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _flwr_numpy_client():
    from flwr.client import NumPyClient
    return NumPyClient


class TorchClient(_flwr_numpy_client()):
    """A Flower ``NumPyClient`` around a torch model and a domain's training function."""

    def __init__(self, model: torch.nn.Module, train_fn: Callable[[torch.nn.Module, int, dict], tuple[int, dict]],
                 evaluate_fn: Callable[[torch.nn.Module], tuple[float, int, dict]] | None = None, name: str = "site"):
        self.model, self.train_fn, self.evaluate_fn, self.name = model, train_fn, evaluate_fn, name

    def get_parameters(self, config: dict) -> list[np.ndarray]:
        return get_arrays(self.model)

    def fit(self, parameters: list[np.ndarray], config: dict) -> tuple[list[np.ndarray], int, dict]:
        set_arrays(self.model, parameters)
        mu = float(config.get("proximal_mu", 0.0))
        with proximal_term(self.model, mu):
            n, metrics = self.train_fn(self.model, int(config.get("server_round", 0)), dict(config))
        return get_arrays(self.model), int(n), {"site": self.name, **metrics}

    def evaluate(self, parameters: list[np.ndarray], config: dict) -> tuple[float, int, dict]:
        if self.evaluate_fn is None:
            return 0.0, 0, {}
        set_arrays(self.model, parameters)
        return self.evaluate_fn(self.model)


def make_strategy(name: str, initial: list[np.ndarray], n_clients: int, *, mu: float = 0.0, server_lr: float = 1.0, server_momentum: float = 0.0,
                  evaluate_fn: Callable[[int, list[np.ndarray], dict], Any] | None = None, fit_config: dict | None = None):
    """Flower's ``FedAvg``, ``FedProx(proximal_mu=mu)`` or ``FedAvgM`` (server learning rate and
    momentum on the averaged update): every round all ``n_clients`` train
    (fraction 1), no federated evaluation (the server evaluates with ``evaluate_fn``)."""
    from flwr.common import ndarrays_to_parameters
    from flwr.server.strategy import FedAvg, FedAvgM, FedProx

    def on_fit_config(server_round: int) -> dict:
        return {"server_round": server_round, **(fit_config or {})}

    kw = dict(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=n_clients, min_available_clients=n_clients,
              min_evaluate_clients=0, initial_parameters=ndarrays_to_parameters(initial), on_fit_config_fn=on_fit_config,
              evaluate_fn=evaluate_fn)
    if name == "fedavg":
        return FedAvg(**kw)
    if name == "fedprox":
        return FedProx(proximal_mu=mu, **kw)
    if name == "fedavgm":
        return FedAvgM(server_learning_rate=server_lr, server_momentum=server_momentum, **kw)
    raise ValueError(f"unknown strategy {name!r} (choose from {', '.join(STRATEGIES)})")


def parameters_bytes(arrays: list[np.ndarray]) -> int:
    """Bytes of the serialized Flower ``Parameters`` of ``arrays`` (what one transfer sends)."""
    from flwr.common import ndarrays_to_parameters
    return int(sum(len(t) for t in ndarrays_to_parameters(arrays).tensors))


def update_agreement(global_arrays: list[np.ndarray], site_arrays: list[list[np.ndarray]], weights: list[float] | None = None) -> float:
    """How much the sites' updates agree: ``||weighted mean of (w_i - w)|| / weighted mean of ||w_i - w||``.
    1 = every site moved the same way (FedAvg's step is as long as a site's); ``1/sqrt(k)`` for ``k``
    orthogonal updates of equal length; 0 = they cancel. The client-drift diagnostic of a round:
    FedAvg's step is this fraction of a typical site's step."""
    w = np.asarray(weights if weights is not None else [1.0] * len(site_arrays), dtype=np.float64)
    w = w / w.sum()
    deltas = [np.concatenate([(np.asarray(a, np.float64) - np.asarray(g, np.float64)).ravel()
                              for a, g in zip(arrs, global_arrays) if np.issubdtype(np.asarray(g).dtype, np.floating)]) for arrs in site_arrays]
    norms = np.array([np.linalg.norm(d) for d in deltas])
    denom = float((w * norms).sum())
    return float(np.linalg.norm(sum(wi * d for wi, d in zip(w, deltas))) / denom) if denom > 0 else 1.0


def track_updates(strategy, current: Callable[[], list[np.ndarray]], sink: list[dict]):
    """Wrap ``strategy.aggregate_fit`` so every round appends ``{"round", "update_agreement"}`` to
    ``sink`` (:func:`update_agreement` of the sites' results against ``current()``, the global
    weights the round started from, weighted by the sites' example counts); returns ``strategy``."""
    from flwr.common import parameters_to_ndarrays

    aggregate = strategy.aggregate_fit

    def aggregate_fit(server_round, results, failures):
        if results:
            sites = [parameters_to_ndarrays(r.parameters) for _, r in results]
            sink.append({"round": server_round, "update_agreement": update_agreement(current(), sites, [r.num_examples for _, r in results])})
        return aggregate(server_round, results, failures)

    strategy.aggregate_fit = aggregate_fit
    return strategy


def _in_process_proxy_class():
    from flwr.server.client_proxy import ClientProxy

    class InProcessClientProxy(ClientProxy):
        """Flower's server talks to a client object in this process (no network, no Ray)."""

        def __init__(self, cid: str, client) -> None:
            super().__init__(cid)
            self.client = client.to_client()

        def get_properties(self, ins, timeout, group_id):
            return self.client.get_properties(ins)

        def get_parameters(self, ins, timeout, group_id):
            return self.client.get_parameters(ins)

        def fit(self, ins, timeout, group_id):
            return self.client.fit(ins)

        def evaluate(self, ins, timeout, group_id):
            return self.client.evaluate(ins)

        def reconnect(self, ins, timeout, group_id):
            from flwr.common import DisconnectRes
            return DisconnectRes(reason="")

    return InProcessClientProxy


def simulate(strategy, clients: list, rounds: int):
    """Run ``rounds`` rounds of Flower's ``Server`` with ``strategy`` over in-process ``clients``
    (``TorchClient``s), one at a time; returns Flower's ``History``."""
    from flwr.server import Server
    from flwr.server.client_manager import SimpleClientManager

    proxy = _in_process_proxy_class()
    manager = SimpleClientManager()
    for i, c in enumerate(clients):
        manager.register(proxy(str(i), c))
    server = Server(client_manager=manager, strategy=strategy)
    server.set_max_workers(1)  # sites train one after the other: deterministic, and the machine has few cores
    history, _ = server.fit(num_rounds=rounds, timeout=None)
    return history


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(strategy, rounds: int, port: int, round_timeout: float | None = 600.0):
    """Flower's gRPC server on ``127.0.0.1:port`` for ``rounds`` rounds (blocks until they finish);
    returns Flower's ``History``."""
    from flwr.server import ServerConfig, start_server

    return start_server(server_address=f"127.0.0.1:{port}", config=ServerConfig(num_rounds=rounds, round_timeout=round_timeout),
                        strategy=strategy)


def connect(client: TorchClient, address: str) -> None:
    """Run ``client`` as a Flower site against the server at ``address`` until the server ends."""
    from flwr.compat.client.app import start_client

    start_client(server_address=address, client=client.to_client(), insecure=True)
