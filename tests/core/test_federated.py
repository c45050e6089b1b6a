"""core.federated: Flower's own FedAvg/FedProx over in-process clients (tiny linear models)."""

from __future__ import annotations

import numpy as np
import torch

from core.federated import TorchClient, get_arrays, make_strategy, parameters_bytes, set_arrays, simulate

X = torch.linspace(-1, 1, 40).reshape(20, 2)
Y = X @ torch.tensor([[2.0], [-1.0]]) + 0.5


def sgd_steps(model: torch.nn.Module, steps: int = 5, lr: float = 0.1) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(X), Y).backward()
        opt.step()


def client(model: torch.nn.Module) -> TorchClient:
    def train_fn(m, server_round, config):
        sgd_steps(m)
        return len(X), {}
    return TorchClient(model, train_fn)


def fresh() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Linear(2, 1)


def test_fedavg_of_identical_clients_equals_central_training():
    init = fresh()
    history_params: list = []

    def evaluate(rnd, arrays, config):
        history_params.append([a.copy() for a in arrays])
        return 0.0, {}

    strategy = make_strategy("fedavg", get_arrays(init), 3, evaluate_fn=evaluate)
    simulate(strategy, [client(fresh()) for _ in range(3)], rounds=2)
    central = fresh()
    sgd_steps(central, steps=10)  # 2 rounds x 5 local steps
    assert len(history_params) == 3  # initial + 2 rounds, evaluated by Flower's server
    for got, want in zip(history_params[-1], get_arrays(central)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert not np.allclose(history_params[0][0], history_params[-1][0])  # it did train


def test_fedprox_sends_mu_and_the_proximal_term_pulls_local_weights_toward_the_global():
    from flwr.server.client_manager import SimpleClientManager
    from flwr.common import ndarrays_to_parameters

    init = fresh()
    g = get_arrays(init)
    strategy = make_strategy("fedprox", g, 1, mu=5.0)
    assert strategy.proximal_mu == 5.0
    dist = {}
    for mu in (0.0, 5.0):
        w, _, _ = client(fresh()).fit(g, {"proximal_mu": mu, "server_round": 1})
        dist[mu] = sum(float(np.sum((a - b) ** 2)) for a, b in zip(w, g)) ** 0.5
    assert dist[5.0] < 0.8 * dist[0.0], dist
    assert isinstance(SimpleClientManager(), SimpleClientManager) and ndarrays_to_parameters(g).tensors


def test_parameters_bytes_and_set_arrays_round_trip():
    m = fresh()
    arrays = get_arrays(m)
    assert parameters_bytes(arrays) >= sum(a.nbytes for a in arrays)
    other = torch.nn.Linear(2, 1)
    set_arrays(other, arrays)
    for a, b in zip(get_arrays(other), arrays):
        np.testing.assert_array_equal(a, b)


def test_fedavgm_server_learning_rate_scales_the_averaged_update():
    init = fresh()
    out = {}
    for lr in (1.0, 2.0):
        got: list = []
        strategy = make_strategy("fedavgm", get_arrays(init), 2, server_lr=lr, evaluate_fn=lambda r, a, c: (got.append([x.copy() for x in a]), (0.0, {}))[1])
        simulate(strategy, [client(fresh()) for _ in range(2)], rounds=1)
        out[lr] = [b - a for a, b in zip(got[0], got[-1])]
    for d1, d2 in zip(out[1.0], out[2.0]):
        np.testing.assert_allclose(d2, 2 * d1, rtol=1e-4, atol=1e-6)


def test_update_agreement_is_one_for_equal_updates_and_measures_drift():
    from core.federated import track_updates, update_agreement

    g = [np.zeros(3, np.float32), np.zeros(2, np.int64)]  # integer entries (counters) are ignored
    same = [[np.array([1.0, 2.0, 0.0], np.float32), np.ones(2, np.int64)]] * 3
    assert update_agreement(g, same) == 1.0
    opposite = [[np.array([1.0, 0, 0], np.float32), g[1]], [np.array([-1.0, 0, 0], np.float32), g[1]]]
    assert update_agreement(g, opposite) == 0.0
    orth = [[np.eye(3, dtype=np.float32)[i], g[1]] for i in range(3)]
    assert abs(update_agreement(g, orth) - 3 ** -0.5) < 1e-6
    assert abs(update_agreement(g, opposite, [3.0, 1.0]) - 0.5) < 1e-6  # weighted by examples
    init = fresh()
    sink: list = []
    cur = {"a": get_arrays(init)}
    strategy = track_updates(make_strategy("fedavg", get_arrays(init), 2, evaluate_fn=lambda r, a, c: (cur.update(a=a), (0.0, {}))[1]),
                             lambda: cur["a"], sink)
    simulate(strategy, [client(fresh()) for _ in range(2)], rounds=2)
    assert [s["round"] for s in sink] == [1, 2] and all(abs(s["update_agreement"] - 1.0) < 1e-5 for s in sink)  # identical sites
