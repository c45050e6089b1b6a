"""Training loops below the ``train`` and ``slices`` commands.

* :func:`fit` — the 3D trainer: cached foreground-balanced patches, DiceCE, AdamW + warm-up + cosine,
  mixed precision where it pays, validation by sliding window every ``val_every`` epochs (best mean
  Dice → ``best.safetensors``), early stopping, checkpoints whose resume is bit-exact (model,
  optimizer, scheduler, AMP scaler, the global RNGs — via ``core.runs`` — and the MONAI transforms'
  own random states, which draw the patches and augmentations), the held-out evaluation at the end.
* :func:`fit_slices` — the 2.5D EfficientNet-Lite0 variant (full fine-tuning or LoRA).
* :func:`train_step`, :func:`train_memory_format`, :func:`validation_volume`, :func:`pipeline_config`,
  :func:`write_task_meta`, :func:`slice_batches`: the pieces, public for the benchmarks.

Validation volume: the tasks here have a single training subject, so there is no second subject to
select on without touching the test volume. Validation uses a fixed, deterministically deformed
(rotated, scaled, gamma-changed) copy of the training volume; the test volume is only used once,
after training. With a user MSD task holding ≥ 2 training cases, the last one is held out instead.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from monai import transforms as mt

from core.checkpoint import load_weights, save_weights
from core.device import amp_dtype, autocast
from core.errors import plain
from core.io import atomic_write_json
from core.logging import get_logger
from core.progress import progress
from core.runs import RunNotFoundError, resolve_model_run
from domains.medical.config import PipelineConfig, SliceConfig, TrainConfig
from domains.medical.data import MsdTask, read_msd_task, read_synthesis, read_task_meta, task_dir
from domains.medical.io import Volume
from domains.medical.metrics import dice_per_class, evaluate_heldout, hd95_per_class
from domains.medical.model import create_model, model_spec
from domains.medical.predict import Segmenter, sliding_window_logits
from domains.medical.synth import SynthSampler, load_head
from domains.medical.transforms import AUGMENT_RECIPES, cached_patch_dataset, intensity_transform, invert_inside_head, preprocess
from domains.medical.validation import MedicalInputError

__all__ = ["fit", "fit_slices", "train_step", "train_memory_format", "to_train_layout", "InstanceNormAsGroupNorm", "prefetch", "make_optimizer", "validation_volume", "pipeline_config", "write_task_meta",
           "slice_batches", "load_training_task", "init_source", "validation_case", "contrast_pose_copies", "transform_rng_state", "set_transform_rng_state", "validate_all", "synth_sampler"]

log = get_logger("medical.training")


def load_training_task(task_ref: str) -> MsdTask:
    task = read_msd_task(task_dir(task_ref))
    if not task.training:
        raise MedicalInputError(f"{task.root}: no training cases")
    return task


def init_source(cfg: TrainConfig, task: MsdTask) -> Path | None:
    """``--init-from``: the run whose ``best.safetensors`` initialises the network, checked before a run folder
    exists. Its network must be the one this training builds — the same model and channel widths, and as many
    output classes as ``task`` has (one input channel: multi-channel tasks are refused) — else one line naming
    both sides and what to do (weights do not load partially: a shape mismatch used to be a tensor-level
    error from inside training, after a failed run folder was created)."""
    if not cfg.init_from:
        return None
    try:
        src = resolve_model_run("medical", cfg.init_from, cfg.runs_dir)
    except RunNotFoundError as e:  # its message names the --model-run flag of infer/evaluate
        raise RunNotFoundError(str(e).replace("--model-run ", "--init-from ", 1)) from None
    meta = read_task_meta(src)
    have = meta["model"]
    want = model_spec(cfg.model, num_classes=task.num_classes, channels=tuple(cfg.channels))
    hk, wk = have.get("kwargs") if isinstance(have.get("kwargs"), dict) else {}, want["kwargs"]
    n_src = hk.get("num_classes", len(meta["class_names"]))
    diffs = [] if n_src == task.num_classes else [
        f"it segments {plain(n_src)} classes ({_names(meta['class_names'])}; task {meta.get('task')}), this task {task.name} has "
        f"{task.num_classes} ({_names(task.class_names)})"]
    if have.get("name") != want["name"]:
        diffs.append(f"its model is {have.get('name')}, this one --model {want['name']}")
    elif hk.get("channels") != wk.get("channels"):
        diffs.append(f"its --channels are {' '.join(map(str, hk.get('channels') or []))}, this one's {' '.join(map(str, wk['channels']))}")
    else:
        diffs += [f"its {k} is {plain(hk.get(k))}, this one's {plain(wk[k])}" for k in sorted(wk) if k not in ("num_classes", "dropout") and hk.get(k) != wk[k]]
    if diffs:
        same_net = f"--model {have.get('name')}" + (f" --channels {' '.join(map(str, hk['channels']))}" if isinstance(hk.get("channels"), list) else "")
        todo = (f"initialise from a run trained on a task with these {task.num_classes} classes" if n_src != task.num_classes
                else f"train with {same_net} as that run was")
        raise MedicalInputError(f"--init-from {cfg.init_from}: its weights do not fit the network this training builds: {'; '.join(diffs)}; "
                                f"{todo}, or train without --init-from")
    return src


def _names(names: list, at_most: int = 5) -> str:
    shown = ", ".join(str(n) for n in names[:at_most])
    return shown + (f", … {len(names) - at_most} more" if len(names) > at_most else "")


def pipeline_config(cfg: TrainConfig, task: MsdTask) -> PipelineConfig:
    return PipelineConfig(modality=task.modality, num_classes=task.num_classes, spacing=cfg.spacing, patch=cfg.patch,
                          num_samples=cfg.num_samples, ct_level=cfg.ct_level, ct_width=cfg.ct_width,
                          allow_flip=not any(n.lower().endswith(("left", "right", "_l", "_r")) for n in task.class_names))


def validation_volume(d: dict, deform: bool) -> dict:
    """The validation case (an output of ``preprocess``); ``deform`` applies the fixed deformation
    described above (to a copy)."""
    if deform:
        d = mt.Compose([
            mt.Affined(keys=["image", "label"], rotate_params=(0.08, -0.06, 0.05), scale_params=(1.05, 0.96, 1.04),
                       mode=("bilinear", "nearest"), padding_mode="zeros"),
            mt.AdjustContrastd(keys="image", gamma=1.1, retain_stats=True),
        ])(d)
    return d


def contrast_pose_copies(val: dict, invert: bool = True) -> list[dict]:
    """Two more validation copies for the ``robust`` recipe (still Colin27, never MNI152): the
    validation volume with a T2-type inversion inside the head (the contrast the ``robust`` recipe
    randomises) and the validation volume tilted a further ~10° about the left–right axis and ~6°
    about the vertical one (an oblique acquisition). ``invert=False`` (CT): the tilted copy only."""
    tilted = mt.Affined(keys=["image", "label"], rotate_params=(0.17, 0.0, -0.1), mode=("bilinear", "nearest"), padding_mode="zeros")(dict(val))
    if not invert:
        return [tilted]
    inverted = dict(val)
    inverted["image"] = invert_inside_head(val["image"], background=float(val["image"].min()))  # its gamma moved the background off 0
    return [inverted, tilted]


def validation_case(task: MsdTask, spacing: float = 1.0, with_skull: bool = False) -> tuple[str, Volume, np.ndarray]:
    """The case :func:`fit` selects on — the fixed deformed copy of the single training volume (or the
    last training case of a task with several) — on a ``spacing`` mm grid, as (id, volume, label), for
    choosing inference settings on validation data (``evaluate --split val``), never on the test set.
    ``with_skull``: the same copy of the task's head image with its skull (``--with-skull``'s extra
    validation volume; tasks without one raise)."""
    deform = len(task.training) < 2
    case = task.training[0] if deform else task.training[-1]
    if with_skull:
        heads = read_synthesis(task.root)
        if heads is None:
            raise MedicalInputError(f"task {task.root} has no head image with skull (no synthesis entry in dataset.json)")
        case = {"image": str(heads["head"]), "label": task.training[0]["label"]}
    pipe = PipelineConfig(modality=task.modality, num_classes=task.num_classes, spacing=spacing)
    v = validation_volume(preprocess(pipe, crop=False)(dict(case)), deform)
    vol = Volume(data=v["image"][0].numpy().astype(np.float32), affine=np.asarray(v["image"].affine, dtype=np.float64),
                 path="<validation>", format="nifti")
    return "validation", vol, v["label"][0].numpy().round().astype(np.uint8)


def validate(model, val: dict, pipe: PipelineConfig, cfg: TrainConfig, class_names: list[str], device) -> dict:
    """Per-class Dice and HD95 of ``model`` on the validation volume (network grid)."""
    logits = sliding_window_logits(model, val["image"][None].as_tensor(), pipe.patch, cfg.sw_batch_size, cfg.overlap, device, amp=cfg.amp)
    pred = logits[0].argmax(0).numpy().astype(np.uint8)
    lab = val["label"][0].numpy().round().astype(np.uint8)
    dice = dice_per_class(pred, lab, class_names)
    hd = hd95_per_class(pred, lab, class_names, (pipe.spacing,) * 3)
    return {"val_mean_dice": float(np.nanmean(list(dice.values()))), **{f"val_dice/{k}": v for k, v in dice.items()},
            **{f"val_hd95/{k}": v for k, v in hd.items()}}


def validate_all(model, vals: list[dict], pipe: PipelineConfig, cfg: TrainConfig, class_names: list[str], device) -> dict:
    """:func:`validate` on each validation volume; with several, ``val_mean_dice`` is their mean and
    each volume's own mean is logged as ``val_mean_dice/<i>`` (synth: 0 the skull-stripped copy, 1 with skull; robust: 0 the
    deformed copy, 1 its T2-type inversion, 2 tilted — :func:`contrast_pose_copies`)."""
    ms = [validate(model, v, pipe, cfg, class_names, device) for v in vals]
    if len(ms) == 1:
        return ms[0]
    out = {**ms[0], "val_mean_dice": float(np.mean([m["val_mean_dice"] for m in ms]))}
    out.update({f"val_mean_dice/{i}": m["val_mean_dice"] for i, m in enumerate(ms)})
    return out


def synth_sampler(synthesis: dict, pipe: PipelineConfig, seed: int) -> SynthSampler:
    """A :class:`domains.medical.synth.SynthSampler` over a task's ``synthesis`` entry
    (``data.read_synthesis``), cached on the network grid with the inference intensity transform."""
    vols = load_head(synthesis["head"], synthesis["brain"], synthesis["generation_labels"], pipe.spacing,
                     intensity_transform(pipe, keys=("head", "brain")))
    return SynthSampler(vols["head"], vols["brain"], vols["gen"], pipe.patch, pipe.spacing, seed=seed)


def train_memory_format(device: torch.device, amp: bool) -> torch.memory_format:
    """Memory format for training a 3D net: ``channels_last_3d`` for fp32 on the CPU, where oneDNN's
    3D convolutions ran a training step ~1.25x faster in it (ad-hoc timing; bench/medical.py measures
    the whole fp32 pipeline);
    contiguous under bf16 autocast (measured slightly slower in channels-last) and on GPUs (not
    measured here). Inference stays contiguous: MONAI's sliding window was slower in channels-last."""
    if device.type == "cpu" and not (amp and amp_dtype(device) is not None):
        return torch.channels_last_3d
    return torch.contiguous_format


class InstanceNormAsGroupNorm(torch.nn.GroupNorm):
    """``InstanceNorm3d(C, affine=False)`` (no running statistics) computed as ``GroupNorm(C, C)`` — one
    channel per group, the same normalisation over each sample's channel — on a contiguous copy of its
    input. No parameters or buffers, so a model's state dict is unchanged. In an fp32 channels-last
    network on the CPU this is cheaper than ``instance_norm``, which reshapes to a batch norm over
    ``N·C`` channels (measured ~3 % of the default UNet's step, paired CPU-time microbenchmark)."""

    def __init__(self, num_channels: int, eps: float = 1e-5):
        super().__init__(num_channels, num_channels, eps=eps, affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.group_norm(x.contiguous(), self.num_groups, None, None, self.eps)


def to_train_layout(model: torch.nn.Module, device: torch.device, amp: bool) -> torch.memory_format:
    """Move ``model`` to ``device`` in the training memory format (:func:`train_memory_format`) and
    return that format; in channels-last (fp32 on the CPU) its parameter-free instance norms run as
    :class:`InstanceNormAsGroupNorm` (same function, same state dict; inference builds its own model)."""
    fmt = train_memory_format(device, amp)
    if fmt == torch.channels_last_3d:
        for parent in list(model.modules()):
            for name, child in list(parent.named_children()):
                if type(child) is torch.nn.InstanceNorm3d and not child.affine and not child.track_running_stats:
                    setattr(parent, name, InstanceNormAsGroupNorm(child.num_features, eps=child.eps))
    model.to(device, memory_format=fmt)
    return fmt


def train_step(model: torch.nn.Module, batch: dict, loss_fn, opt: torch.optim.Optimizer, device: torch.device, amp: bool = True,
               scaler: torch.amp.GradScaler | None = None, memory_format: torch.memory_format = torch.contiguous_format) -> float:
    """One optimizer step on a patch batch (inputs in the model's ``memory_format``); the forward
    pass under :func:`core.device.autocast`, the loss on fp32 logits. Returns the loss."""
    x, y = batch["image"].to(device, non_blocking=True), batch["label"].to(device, non_blocking=True)
    if x.dim() == 5:
        x = x.contiguous(memory_format=memory_format)
    opt.zero_grad(set_to_none=True)
    with autocast(device, amp):
        logits = model(x)
    loss = loss_fn(logits.float(), y)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    else:
        loss.backward()
        opt.step()
    return float(loss.detach())


def prefetch(batches, depth: int = 2) -> Iterator:
    """``batches`` with the next ``depth`` of them drawn on a background thread while the caller
    computes (data preparation overlaps the training step, as a DataLoader worker would; torch and
    NumPy release the GIL in the heavy parts). The same batches in the same order: the first one is
    drawn on the calling thread (so a DataLoader's shuffle seed comes from the caller's global RNG,
    as without prefetching), the rest strictly in sequence by one thread, and only from this
    iterable — when it is exhausted every draw of it is done, so random states saved afterwards
    (the transforms' RNGs in a checkpoint) are those of the plain loop. An exception while drawing
    is raised in the caller; closing the generator early stops the thread after its current draw."""
    import queue
    import threading

    it = iter(batches)
    try:
        first = next(it)
    except StopIteration:
        return
    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for b in it:
                if not put((b, None)):
                    return
            put((done, None))
        except BaseException as e:  # noqa: BLE001 — handed to the caller
            put((done, e))

    t = threading.Thread(target=work, name="medical-prefetch", daemon=True)
    t.start()
    try:
        yield first
        while True:
            b, err = q.get()
            if b is done:
                if err is not None:
                    raise err
                return
            yield b
    finally:
        stop.set()
        t.join()


def make_optimizer(params, lr: float, weight_decay: float, device: torch.device) -> torch.optim.Optimizer:
    """The trainer's AdamW; its fused kernel on CPU and CUDA (one pass over all parameters instead of
    a Python loop of small ops: ~0.003 instead of ~0.011 CPU-s per step for the default UNet)."""
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True if device.type in ("cpu", "cuda") else None)


def write_task_meta(run, task_ref: str, task: MsdTask, pipe: PipelineConfig, spec: dict) -> dict:
    """``task.json``: what a trained run needs to be loaded back (``predict.read_task_meta``): the task,
    class names, pipeline and the model spec ``{"name", "kwargs"}`` of the registry."""
    meta = {"task": task_ref, "task_name": task.name, "modality": task.modality, "class_names": task.class_names,
            "pipeline": pipe.to_dict(), "model": spec}
    atomic_write_json(run.path("task.json"), meta)
    return meta


# --- random states of the MONAI transforms (bit-exact resume) -----------------------------------


def _random_states(obj: Any, out: list[np.random.RandomState], seen: set[int]) -> None:
    from monai.transforms import Randomizable, Transform

    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, np.random.RandomState):
        out.append(obj)
    elif isinstance(obj, (list, tuple)):
        for x in obj:
            _random_states(x, out, seen)
    elif isinstance(obj, (Transform, Randomizable)) and hasattr(obj, "__dict__"):
        for k in sorted(vars(obj)):
            _random_states(vars(obj)[k], out, seen)


def _transform_states(transform: Any) -> list[np.random.RandomState]:
    out: list[np.random.RandomState] = []
    _random_states(transform, out, set())
    return out


def transform_rng_state(transform: Any) -> str:
    """The random states of every MONAI transform reachable from ``transform`` (a Compose), as JSON."""
    states = []
    for r in _transform_states(transform):
        name, keys, pos, has_gauss, cached = r.get_state()
        states.append([name, [int(k) for k in keys], int(pos), int(has_gauss), float(cached)])
    return json.dumps(states)


def set_transform_rng_state(transform: Any, state: str) -> None:
    rs = _transform_states(transform)
    states = json.loads(state)
    if len(states) != len(rs):
        raise MedicalInputError(f"--resume: the checkpoint holds {len(states)} transform random states, this pipeline has {len(rs)}; "
                                "resume with the same settings it was trained with")
    for r, (name, keys, pos, has_gauss, cached) in zip(rs, states):
        r.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


# --- 3D ------------------------------------------------------------------------------------------


def fit(cfg: TrainConfig, run, dp, task: MsdTask) -> dict:
    """Train, select, stop early and evaluate on the held-out volume(s) inside ``run`` (a
    ``core.runs.Run``; ``dp`` its ``core.distributed.DataParallel``); returns the run summary."""
    from monai.data import DataLoader, list_data_collate
    from monai.losses import DiceCELoss

    device = run.device
    pipe = pipeline_config(cfg, task)
    spec = model_spec(cfg.model, num_classes=task.num_classes, channels=tuple(cfg.channels))
    if run.is_main:
        write_task_meta(run, cfg.task, task, pipe, spec)
    train_cases = task.training[:-1] if len(task.training) >= 2 else task.training
    val_case, deform = (task.training[-1], False) if len(task.training) >= 2 else (task.training[0], True)
    t0 = time.perf_counter()
    pre = preprocess(pipe)
    train_pre = [pre(dict(c)) for c in train_cases]  # each volume read and resampled once
    val = validation_volume(train_pre[0] if deform else pre(dict(val_case)), deform)
    synthesis = read_synthesis(task.root) if cfg.augment == "synth" else None
    vals = [val, *contrast_pose_copies(val, invert=pipe.modality.upper() != "CT")] if cfg.augment == "robust" else [val]
    heads = read_synthesis(task.root) if cfg.with_skull and synthesis is None else None
    if heads is not None:  # the same subject with its skull: a second training image, and a deformed copy to select on
        head_pre = pre({"image": str(heads["head"]), "label": train_cases[0]["label"]})
        train_pre.append(head_pre)
        vals.append(validation_volume(head_pre, deform=True))
    elif cfg.with_skull and synthesis is None:
        log.info(f"task {cfg.task} has no head image with skull (no synthesis entry): training on its own images")
    if synthesis is not None:  # domain randomisation from the whole-head label map; batches made in-process
        sampler = synth_sampler(synthesis, pipe, seed=int(np.random.randint(2**31)))
        ds = None
        head_case = pre({"image": str(synthesis["head"]), "label": train_cases[0]["label"]})
        vals.append(validation_volume(head_case, deform=True))  # also select on the deformed head with its skull
    else:
        sampler = None
        ds = cached_patch_dataset(train_pre, pipe, draws_per_epoch=cfg.iters_per_epoch, preprocessed=True,
                                  recipe=cfg.augment if cfg.augment in AUGMENT_RECIPES else "standard")
        loader = DataLoader(ds, batch_size=1, shuffle=True, num_workers=0, collate_fn=list_data_collate)
    log.info(f"cached {len(train_cases)} training volume(s) + validation in {time.perf_counter() - t0:.1f}s")

    model = create_model(spec)
    fmt = to_train_layout(model, device, cfg.amp)
    src = init_source(cfg, task)  # fine-tuning: start from another run's best weights (the same network spec)
    if src is not None:
        load_weights(src / "best.safetensors", model)
    opt = make_optimizer(model.parameters(), cfg.lr, cfg.weight_decay, device)
    total = cfg.max_epochs * cfg.iters_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 20) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    scaler = torch.amp.GradScaler("cuda") if cfg.amp and amp_dtype(device) == torch.float16 else None
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False)

    state = run.resume(model, opt, sched, scaler)  # also restores the torch / NumPy / Python RNGs of the checkpoint
    step, extra = int(state["step"]), state.get("extra") or {}
    if extra.get("transform_rng"):  # the patch draws continue where they stopped
        if sampler is not None:
            sampler.set_state(extra["transform_rng"])
        else:
            set_transform_rng_state(ds.base.transform, extra["transform_rng"])
    net = dp.wrap(model)  # DDP under torchrun (weights from rank 0, gradients averaged); the model itself otherwise
    best, bad, history = float(extra.get("best", -1.0)), int(extra.get("bad", 0)), list(json.loads(extra.get("history", "[]")))
    epoch0 = step // cfg.iters_per_epoch
    stopped_early = False
    patches = 0
    t_train = time.perf_counter()
    for epoch in range(epoch0, cfg.max_epochs):
        net.train()
        losses = []
        batches = sampler.batches(cfg.num_samples, cfg.iters_per_epoch) if sampler is not None else loader
        # batches prepared on a thread while the step computes (a worker process was tried in session 4 and removed
        # in session 5: no gain on the idle machine, and the step is not measurably blocked by the thread)
        batches = prefetch(batches)
        for batch in progress(batches, desc=f"epoch {epoch + 1}/{cfg.max_epochs}", total=cfg.iters_per_epoch, leave=False, disable=not run.is_main):
            loss = train_step(net, batch, loss_fn, opt, device, cfg.amp, scaler, memory_format=fmt)
            sched.step()
            step += 1
            patches += batch["image"].shape[0] * dp.world_size
            losses.append(loss)
        train_loss = dp.mean(float(np.mean(losses)))
        run.log_metrics({"train_loss": train_loss, "lr": sched.get_last_lr()[0]}, step)
        if (epoch + 1) % cfg.val_every == 0 or epoch + 1 == cfg.max_epochs:
            if run.is_main:  # validation and the best checkpoint on rank 0; the decision is shared below
                m = validate_all(model, vals, pipe, cfg, task.class_names, device)
                run.log_metrics(m, step)
                history.append({"epoch": epoch + 1, "step": step, "val_mean_dice": m["val_mean_dice"]})
                log.info(f"epoch {epoch + 1}: loss {train_loss:.4f}, val mean Dice {m['val_mean_dice']:.4f}")
                if m["val_mean_dice"] > best:
                    best, bad = m["val_mean_dice"], 0
                    save_weights(run.path("best.safetensors"), model, metadata={"step": str(step), "val_mean_dice": f"{best:.5f}"})
                else:
                    bad += 1
            best, bad = dp.broadcast((best, bad))
            run.save_checkpoint(model, opt, sched, scaler=scaler, step=step, epoch=epoch + 1,
                                extra={"best": best, "bad": bad, "history": json.dumps(history), "transform_rng": sampler.get_state() if sampler is not None else transform_rng_state(ds.base.transform)})
            if bad >= cfg.patience:
                log.info(f"early stopping after {bad} validations without improvement")
                stopped_early = True
                break
    train_seconds = time.perf_counter() - t_train
    summary = {"best_val_mean_dice": best, "steps": step, "stopped_early": stopped_early, "world_size": dp.world_size,
               "train_patches_per_s": patches / train_seconds if patches else None, "train_seconds": train_seconds}
    if run.is_main and cfg.evaluate_test and any(c.get("label") for c in task.test):
        summary.update(evaluate_heldout(Segmenter.from_run(run.dir, device=str(device)), task.test, run))
    return summary


# --- 2.5D ----------------------------------------------------------------------------------------


def slice_batches(img: torch.Tensor, lab: torch.Tensor, num_classes: int, k: int, batch: int, rng: np.random.Generator) -> Iterator[tuple]:
    """Foreground-balanced axial slices: pick a class uniformly, then a slice containing it."""
    import torch.nn.functional as F

    z_with = [np.flatnonzero((lab == c).any(dim=(0, 1)).numpy()) for c in range(num_classes)]
    z_with = [z for z in z_with if len(z)]
    padded = F.pad(img[None, None], (k, k, 0, 0, 0, 0), mode="replicate")[0, 0]
    while True:
        zs = [int(rng.choice(z_with[rng.integers(len(z_with))])) for _ in range(batch)]
        x = torch.stack([padded[:, :, z:z + 2 * k + 1].permute(2, 0, 1) for z in zs])
        y = torch.stack([lab[:, :, z] for z in zs])[:, None]
        x = x * float(rng.uniform(0.9, 1.1)) + float(rng.uniform(-0.1, 0.1))
        yield x, y


def fit_slices(cfg: SliceConfig, run, task: MsdTask) -> dict:
    """Train the 2.5D model inside ``run``, save it (LoRA merged) and evaluate it on the held-out
    volume(s) by the same code as the 3D net; returns the run summary."""
    from monai.losses import DiceCELoss

    from core.finetune import apply_lora, merge_lora, trainable_parameter_report

    pipe = PipelineConfig(modality=task.modality, num_classes=task.num_classes, spacing=cfg.spacing, patch=128)
    d = preprocess(pipe)(dict(task.training[0]))
    img, lab = d["image"][0].as_tensor().float(), d["label"][0].as_tensor().round().long()
    spec = model_spec("effnet2d", num_classes=task.num_classes, context=cfg.context)
    model = create_model(spec, pretrained=cfg.pretrained)  # the stored spec loads back with pretrained=False: the weights come from the run
    net = model.net2d.to(run.device)
    if cfg.mode == "lora":
        apply_lora(net, target_modules=r".*encoder\..*conv_(pw|pwl)", r=cfg.lora_r, alpha=2 * cfg.lora_r, trainable=["lateral", "fuse", "head"])
    params = trainable_parameter_report(net)
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=1e-5)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.steps)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False)
    batches = slice_batches(img, lab, task.num_classes, cfg.context, cfg.batch, np.random.default_rng(cfg.seed))
    net.train()
    t0 = time.perf_counter()
    for step in progress(range(1, cfg.steps + 1), desc=f"2.5D {cfg.mode}"):
        x, y = next(batches)
        loss = train_step(net, {"image": x, "label": y}, loss_fn, opt, run.device, cfg.amp)
        sched.step()
        if step % 10 == 0 or step == cfg.steps:
            run.log_metrics({"train_loss": loss}, step)
    train_seconds = time.perf_counter() - t0
    if cfg.mode == "lora":
        merge_lora(net)
    model.net2d = net.eval()
    save_weights(run.path("best.safetensors"), model)
    write_task_meta(run, cfg.task, task, pipe, spec)
    summary = {"mode": cfg.mode, "steps": cfg.steps, "train_seconds": train_seconds, "trainable_params": params.get("trainable"),
               "total_params": params.get("total"), "train_slices_per_s": cfg.steps * cfg.batch / train_seconds}
    seg = Segmenter(model, pipe, task.class_names, device=run.device, sw_batch_size=1, overlap=0.0, amp=cfg.amp)
    summary.update(evaluate_heldout(seg, task.test, run, label=f"2.5D EfficientNet-Lite0 ({cfg.mode})"))
    return summary
