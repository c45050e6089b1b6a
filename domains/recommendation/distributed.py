"""Scale path: the same two-tower model trained through TorchRec ``DistributedModelParallel``.

    python -m domains.recommendation.train --dmp                                    # world size 1 (gloo, CPU)
    torchrun --nproc_per_node=2 -m domains.recommendation.train --dmp --sharding table_wise

* Process group: gloo (CPU) or nccl (CUDA); under ``torchrun`` the env:// rendezvous, otherwise a
  one-process group on a free local port.
* Sharding plan: ``EmbeddingShardingPlanner`` over a ``Topology(world_size, compute_device)`` with every
  table constrained to ``--sharding`` (CPU accepts table_wise, column_wise, table_column_wise,
  data_parallel; TorchRec refuses row_wise / table_row_wise / grid_shard on CPU). The plan is written
  to ``sharding_plan.txt`` in the run.
* Optimisers: embedding tables use TorchRec's fused optimizer (row-wise Adagrad at 10× the Adam lr,
  applied in backward by ``apply_optimizer_in_backward``; FBGEMM's CPU kernels have no Adam); the dense MLPs use Adam through ``in_backward_optimizer_filter``
  (feeding them to ``CombinedOptimizer`` directly raises "Duplicate param key").
* Each rank trains on its own shard of the shuffled interactions (in-batch negatives are per rank).
  After training the sharded tables are gathered to rank 0, loaded into a plain :class:`TwoTower`
  and evaluated/saved exactly like a single-process run, so every downstream command is unchanged.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist

from core.distributed import DataParallel
from core.io import atomic_write_text
from core.logging import get_logger
from core.runs import Run
from domains.recommendation.config import CPU_SHARDING, TrainConfig
from domains.recommendation.training import DOMAIN, Prepared, Trainer, TrainingError, build_model, finish_run, fit_two_tower, prepare_inputs

log = get_logger("recommendation.distributed")

__all__ = ["shard_model", "make_optimizer", "gather_state_dict", "train_dmp", "check_dmp_config", "load_full_state_dict",
           "gather_fused_optimizer_state", "load_fused_optimizer_state"]


def shard_model(model: torch.nn.Module, sharding: str, lr: float, device: torch.device):
    """Wrap ``model`` in DistributedModelParallel with a plan constraining every table to ``sharding``."""
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
    from torchrec.distributed.model_parallel import DistributedModelParallel
    from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology
    from torchrec.distributed.types import ShardingEnv
    from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward

    tables = [c.name for ebc in (model.user_ebc, model.item_ebc) for c in ebc.embedding_bag_configs()]
    ebc_params = list(model.user_ebc.parameters()) + list(model.item_ebc.parameters())
    # FBGEMM's CPU kernels have no Adam: tables use row-wise Adagrad (fused into backward)
    from torchrec.optim import RowWiseAdagrad

    apply_optimizer_in_backward(RowWiseAdagrad, ebc_params, {"lr": lr * 10})
    pg = dist.group.WORLD
    world = dist.get_world_size()
    topology = Topology(world_size=world, compute_device=device.type)
    constraints = {t: ParameterConstraints(sharding_types=[sharding]) for t in tables}
    sharders = [EmbeddingBagCollectionSharder()]
    planner = EmbeddingShardingPlanner(topology=topology, constraints=constraints)
    plan = planner.collective_plan(model, sharders, pg)
    dmp = DistributedModelParallel(model, env=ShardingEnv.from_process_group(pg), device=device, plan=plan, sharders=sharders)
    return dmp, plan


def make_optimizer(dmp, lr: float, weight_decay: float = 0.0):
    """(combined optimizer, its dense Adam part): the tables' fused optimizer + Adam for everything else."""
    from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
    from torchrec.optim.optimizers import in_backward_optimizer_filter

    dense = KeyedOptimizerWrapper(dict(in_backward_optimizer_filter(dmp.named_parameters())),
                                  lambda params: torch.optim.Adam(params, lr=lr, weight_decay=weight_decay))
    return CombinedOptimizer([dmp.fused_optimizer, dense]), dense


def gather_state_dict(dmp) -> dict[str, torch.Tensor] | None:
    """Full (unsharded) state dict on rank 0 (None elsewhere); a collective: call on every rank."""
    from torch.distributed._shard.sharded_tensor import ShardedTensor

    rank = dist.get_rank()
    out: dict[str, torch.Tensor] = {}
    for key, value in dmp.state_dict().items():
        key = _plain_key(key)
        if isinstance(value, ShardedTensor):
            full = torch.zeros(value.size(), dtype=value.dtype) if rank == 0 else None
            value.gather(dst=0, out=full)
            value = full
        elif hasattr(value, "full_tensor"):  # DTensor
            value = value.full_tensor()
        if rank == 0:
            out[key] = value.detach().cpu().clone()
    return out if rank == 0 else None


def _plain_key(key: str) -> str:
    return key.replace("_dmp_wrapped_module.", "").replace("module.", "", 1) if key.startswith(("_dmp_wrapped_module.", "module.")) else key


def _copy_into_shards(value, full: torch.Tensor) -> None:
    """Write the part of the plain tensor ``full`` that this rank holds into ``value`` (a ShardedTensor or a plain tensor)."""
    from torch.distributed._shard.sharded_tensor import ShardedTensor

    with torch.no_grad():
        if isinstance(value, ShardedTensor):
            for shard in value.local_shards():
                idx = tuple(slice(o, o + n) for o, n in zip(shard.metadata.shard_offsets, shard.metadata.shard_sizes))
                shard.tensor.copy_(full[idx])
        else:
            value.copy_(full)


def load_full_state_dict(dmp, full: dict[str, torch.Tensor]) -> None:
    """A plain (unsharded) state dict into a DistributedModelParallel model: every rank writes its own shards (in place)."""
    for key, value in dmp.state_dict().items():
        _copy_into_shards(value, full[_plain_key(key)])


def gather_fused_optimizer_state(dmp) -> dict[str, torch.Tensor] | None:
    """The fused (in-backward) optimizer's per-table state as plain tensors on rank 0 (None elsewhere); a
    collective. Each rank sends its local shards with their offsets (ranks may list different tables)."""
    from torch.distributed._shard.sharded_tensor import ShardedTensor

    local: dict[str, tuple] = {}
    for pkey, states in dmp.fused_optimizer.state_dict()["state"].items():
        for skey, value in states.items():
            if isinstance(value, ShardedTensor):
                shards = [(list(s.metadata.shard_offsets), s.tensor.detach().cpu().clone()) for s in value.local_shards()]
                local[f"{pkey}/{skey}"] = (tuple(value.size()), shards)
            else:
                local[f"{pkey}/{skey}"] = (tuple(value.shape), [([0] * value.dim(), value.detach().cpu().clone())])
    rank, world = dist.get_rank(), dist.get_world_size()
    parts = [None] * world if rank == 0 else None
    dist.gather_object(local, parts, dst=0)
    if rank != 0:
        return None
    out: dict[str, torch.Tensor] = {}
    for part in parts:
        for name, (size, shards) in part.items():
            for offsets, t in shards:
                full = out.setdefault(name, torch.zeros(size, dtype=t.dtype))
                full[tuple(slice(o, o + n) for o, n in zip(offsets, t.shape))] = t
    return out


def load_fused_optimizer_state(dmp, full: dict[str, torch.Tensor]) -> None:
    for pkey, states in dmp.fused_optimizer.state_dict()["state"].items():
        for skey, value in states.items():
            if f"{pkey}/{skey}" in full:
                _copy_into_shards(value, full[f"{pkey}/{skey}"])


def check_dmp_config(cfg: TrainConfig) -> None:
    if cfg.sharding not in CPU_SHARDING:
        raise TrainingError(f"--sharding {cfg.sharding}: TorchRec on CPU supports {CPU_SHARDING} (row_wise/table_row_wise/grid_shard are refused)")
    if cfg.text == "lora":
        raise TrainingError("--dmp with --text lora is not supported: use --text precomputed (LoRA fine-tuning runs without --dmp)")


def _dmp_trainer(cfg: TrainConfig, prep: Prepared, dp: DataParallel, device: torch.device, phase: list) -> Trainer:
    # the same initial weights on every rank whatever each rank's RNG position (a scoped generator,
    # not a re-seed of the run: the global RNG is restored on exit)
    phase[0] += 1
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed * 1000 + phase[0])
        model = build_model(cfg, prep.space)
    dmp, plan = shard_model(model, cfg.sharding, cfg.lr, device)
    opt, dense = make_optimizer(dmp, cfg.lr, cfg.weight_decay)
    # checkpoints hold plain tensors: the gathered tables, the gathered fused-optimizer state, the dense Adam state
    def optimizer_state() -> dict | None:
        fused = gather_fused_optimizer_state(dmp)
        return {"fused": fused, "dense": dense.state_dict()} if dp.rank == 0 else None

    def load_optimizer_state(state: dict) -> None:
        load_fused_optimizer_state(dmp, state["fused"])
        dense.init_state()  # KeyedOptimizer loads into existing state only (a zero-grad step; the weights are loaded after this)
        dense.load_state_dict(state["dense"])

    tr = Trainer(model=dmp, optimizer=opt, full_state=lambda: gather_state_dict(dmp), rank=dp.rank, broadcast=dp.broadcast,
                 optimizer_state=optimizer_state, load_optimizer_state=load_optimizer_state,
                 load_full_state=lambda state: load_full_state_dict(dmp, state))
    tr.plan = plan  # type: ignore[attr-defined]
    return tr


def train_dmp(cfg: TrainConfig, run: Run | None, dp: DataParallel, prep: Prepared | None = None) -> Path:
    """Train through DistributedModelParallel on ``dp``'s process group (every rank calls this; rank 0
    holds ``run``, the others pass None). Each rank trains on its own equal shard of the (seeded)
    shuffled training interactions; validation and the final evaluation run on rank 0 with the gathered tables.
    ``prep``: this rank's :func:`prepare_inputs`, made before the run started (None: made here)."""
    import numpy as np

    from core.device import resolve_device

    check_dmp_config(cfg)
    if getattr(cfg, "ema_decay", 0.0):  # the sharded tables and fused optimizer are not averaged: DMP trains the raw weights
        log.warning(f"--dmp: --ema-decay {cfg.ema_decay} is ignored (no weight average over sharded tables); the raw weights are validated and saved")
    device = resolve_device(cfg.device)
    rank, world = dp.rank, dp.world_size
    prep = prepare_inputs(cfg) if prep is None else prep

    def shard(u: np.ndarray, i: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        perm = np.random.default_rng(cfg.seed).permutation(len(u))
        per = len(perm) // world
        mine = perm[rank * per:(rank + 1) * per]
        return u[mine], i[mine]

    # every rank trains on its own shard of each phase's rows; validation and test stay whole, on rank 0
    prep.rank_fit, prep.rank_train = shard(prep.fit_u, prep.fit_i), shard(prep.train_u, prep.train_i)
    phase = [0]
    holder: dict = {}

    def make_trainer() -> Trainer:
        holder["tr"] = _dmp_trainer(cfg, prep, dp, device, phase)
        return holder["tr"]

    state, stats, selection = fit_two_tower(prep, cfg, run, make_trainer)
    stats.update({"world_size": world, "sharding": cfg.sharding})
    out = Path(cfg.runs_dir) / DOMAIN
    if rank == 0:
        atomic_write_text(run.path("sharding_plan.txt"), f"world_size={world} sharding={cfg.sharding}\n{holder['tr'].plan}\n")
        plain = build_model(cfg, prep.space)
        plain.load_state_dict(state)
        out = finish_run(run, cfg, prep, plain, stats, selection)
    dp.barrier()
    return out
