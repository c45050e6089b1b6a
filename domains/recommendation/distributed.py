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

import os
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from core.distributed import free_port
from core.io import atomic_write_text


def init_process_group(device: torch.device) -> tuple[int, int, bool]:
    """Returns (rank, world_size, created_here)."""
    backend = "nccl" if device.type == "cuda" else "gloo"
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), False
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        dist.init_process_group(backend, timeout=timedelta(minutes=10))
    else:
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ["MASTER_PORT"] = str(free_port())
        dist.init_process_group(backend, rank=0, world_size=1, timeout=timedelta(minutes=10))
    return dist.get_rank(), dist.get_world_size(), True


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
    from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
    from torchrec.optim.optimizers import in_backward_optimizer_filter

    dense = KeyedOptimizerWrapper(dict(in_backward_optimizer_filter(dmp.named_parameters())),
                                  lambda params: torch.optim.Adam(params, lr=lr, weight_decay=weight_decay))
    return CombinedOptimizer([dmp.fused_optimizer, dense])


def gather_state_dict(dmp) -> dict[str, torch.Tensor] | None:
    """Full (unsharded) state dict on rank 0 (None elsewhere); a collective: call on every rank."""
    from torch.distributed._shard.sharded_tensor import ShardedTensor

    rank = dist.get_rank()
    out: dict[str, torch.Tensor] = {}
    for key, value in dmp.state_dict().items():
        key = key.replace("_dmp_wrapped_module.", "").replace("module.", "", 1) if key.startswith(("_dmp_wrapped_module.", "module.")) else key
        if isinstance(value, ShardedTensor):
            full = torch.zeros(value.size(), dtype=value.dtype) if rank == 0 else None
            value.gather(dst=0, out=full)
            value = full
        elif hasattr(value, "full_tensor"):  # DTensor
            value = value.full_tensor()
        if rank == 0:
            out[key] = value.detach().cpu().clone()
    return out if rank == 0 else None


def train_dmp(cfg) -> Path:
    from core.device import resolve_device
    from core.runs import Run
    from domains.recommendation.train import DOMAIN, CPU_SHARDING, _log_q, build_model, finish_run, prepare_inputs, train_epochs

    if cfg.sharding not in CPU_SHARDING:
        raise ValueError(f"--sharding {cfg.sharding}: TorchRec on CPU supports {CPU_SHARDING} (row_wise/table_row_wise/grid_shard are refused)")
    if cfg.text == "lora":
        raise ValueError("--dmp with --text lora is not supported: use --text precomputed (LoRA fine-tuning runs without --dmp)")
    device = resolve_device(cfg.device)
    rank, world, created = init_process_group(device)
    try:
        prep, train_df = prepare_inputs(cfg)
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank (dense parts are replicated)
        model = build_model(cfg, prep.space)
        dmp, plan = shard_model(model, cfg.sharding, cfg.lr, device)
        opt = make_optimizer(dmp, cfg.lr, cfg.weight_decay)
        # each rank gets an equal, disjoint shard of the (seeded) shuffled training interactions
        perm = np.random.default_rng(cfg.seed).permutation(len(prep.train_u))
        per = len(perm) // world
        mine = perm[rank * per:(rank + 1) * per]
        log_q = _log_q(prep.train_i, prep.space.n_items)
        if rank == 0:
            with Run.start(DOMAIN, cfg) as run:
                atomic_write_text(run.path("sharding_plan.txt"), f"world_size={world} sharding={cfg.sharding}\n{plan}\n")
                stats = train_epochs(dmp, prep, cfg, opt, prep.train_u[mine], prep.train_i[mine], log_q, run, rank=rank)
                stats.update({"world_size": world, "sharding": cfg.sharding})
                state = gather_state_dict(dmp)
                plain = build_model(cfg, prep.space)
                plain.load_state_dict(state)
                out = finish_run(run, cfg, prep, plain, train_df, stats)
            dist.barrier()
            return out
        stats = train_epochs(dmp, prep, cfg, opt, prep.train_u[mine], prep.train_i[mine], log_q, None, rank=rank)
        gather_state_dict(dmp)
        dist.barrier()
        return Path(cfg.runs_dir) / DOMAIN
    finally:
        if dist.is_initialized() and (created or "RANK" in os.environ):
            dist.destroy_process_group()
