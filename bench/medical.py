"""Medical benchmark → BENCHMARKS.md section "medical" (on a CPU with bf16 matrix units, AMX; "medical-no-amx" on one without).

    python bench/medical.py [--model-run RUN] [--slices-full RUN] [--slices-lora RUN] [--steps 12]

Measured in one process, against a reference written the way MONAI's spleen tutorial does it
(plain ``monai.data.Dataset`` + ``DataLoader`` re-running LoadImaged → Orientationd → Spacingd →
intensity → CropForegroundd → RandCropByPosNegLabeld for every batch; inference with
``sliding_window_inference`` under ``no_grad`` followed by ``Invertd``-style resampling of the full
softmax back to the input grid), same network, same data, same patch size and batch:

* training throughput (patches/s), ours / reference;
* sliding-window inference time per volume (file → mask on the input grid), ours / reference;
* peak RSS of training, and of inference on a full-size 512×512×300 CT (the real InVesalius head
  CT resampled up to that size), ours vs reference;
* per-class Dice on the held-out MNI152 volume of a default training run, next to the public
  anchor (MONAI spleen bundle, mean Dice 0.96 on MSD Task09 — a different task and organ);
* the 3D UNet vs the 2.5D EfficientNet-Lite0 (full fine-tuning and LoRA) in one table, when runs
  are given (``--slices-full`` / ``--slices-lora``; ``--model-run`` for the 3D one).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from core.bench import PeakRSS, machine_line, markdown_table, write_benchmark_section  # noqa: E402


def reference_train_loader(case: dict, pipe):
    """Spleen-tutorial style: every item re-loaded and re-preprocessed, no cache."""
    from monai import transforms as mt
    from monai.data import DataLoader, Dataset

    from domains.medical.transforms import intensity_transform

    keys = ["image", "label"]
    tf = mt.Compose([
        mt.LoadImaged(keys=keys), mt.EnsureChannelFirstd(keys=keys), mt.Orientationd(keys=keys, axcodes="RAS"),
        mt.Spacingd(keys=keys, pixdim=(pipe.spacing,) * 3, mode=("bilinear", "nearest")), intensity_transform(pipe),
        mt.CropForegroundd(keys=keys, source_key="image"),
        mt.RandCropByPosNegLabeld(keys=keys, label_key="label", spatial_size=(pipe.patch,) * 3, pos=1, neg=1, num_samples=pipe.num_samples,
                                  image_key="image", image_threshold=0),
        mt.RandAffined(keys=keys, prob=0.5, rotate_range=(0.15,) * 3, scale_range=(0.1,) * 3, mode=("bilinear", "nearest")),
    ])
    return DataLoader(Dataset([case] * 1000, transform=tf), batch_size=1, shuffle=True, num_workers=0)


def ours_train_loader(case: dict, pipe, recipe: str = "standard"):
    """The trainer's batches: cached preprocessing, ``recipe``'s augmentation, prepared on a background
    thread while the step computes (``training.prefetch``, as ``fit`` does)."""
    from monai.data import DataLoader, list_data_collate

    from domains.medical.training import prefetch
    from domains.medical.transforms import cached_patch_dataset

    ds = cached_patch_dataset([case], pipe, draws_per_epoch=1000, recipe=recipe)
    loader = DataLoader(ds, batch_size=1, shuffle=True, num_workers=0, collate_fn=list_data_collate)
    return prefetch(loader)


def ours_synth_loader(pipe):
    """The default trainer's batches: domain randomisation from the whole-head label map, generated
    in-process (``domains.medical.synth``)."""
    from domains.medical.data import BRAIN_TASK, read_synthesis, task_dir
    from domains.medical.training import prefetch, synth_sampler

    return prefetch(synth_sampler(read_synthesis(task_dir(BRAIN_TASK)), pipe, seed=0).batches(pipe.num_samples, 10**9))


def one_batch_repeated(loader):
    """The first batch of ``loader``, forever: timing the training step without any data cost."""
    import itertools

    it = iter(loader)
    first = next(it)
    if hasattr(it, "close"):
        it.close()
    return itertools.repeat(first)


def train_throughput(loader, model, steps: int, step_fn, make_opt=None) -> tuple[float, float, float]:
    """(patches/s, peak RSS MB, CPU seconds per patch) over ``steps`` optimizer steps after 2 warm-up
    steps. CPU seconds are those of every thread of this process (``time.process_time``: the step and
    the batch-preparing thread): the work done, nearly independent of other jobs' load, whereas
    patches/s is wall-clock."""
    from monai.losses import DiceCELoss

    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False)
    opt = make_opt(model) if make_opt else torch.optim.AdamW(model.parameters(), lr=1e-3)  # the tutorial's optimizer; ours: the trainer's
    it = iter(loader)
    model.train()
    n = 0
    with PeakRSS() as mem:
        for i in range(steps + 2):
            if i == 2:
                t0, c0, n = time.perf_counter(), time.process_time(), 0
            b = next(it)
            step_fn(model, b, loss_fn, opt)
            n += b["image"].shape[0]
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    if hasattr(it, "close"):
        it.close()
    return n / wall, mem.peak_mb, cpu / n


def reference_step(model, b, loss_fn, opt) -> None:
    """The tutorial's loop body: fp32 forward, DiceCE, backward, step."""
    opt.zero_grad()
    loss_fn(model(b["image"]), b["label"]).backward()
    opt.step()


def ours_model(num_classes: int, amp: bool):
    """The UNet as our trainer holds it (memory format and its instance norms included: ``training.to_train_layout``)."""
    from domains.medical.training import to_train_layout

    model = unet(num_classes)
    to_train_layout(model, torch.device("cpu"), amp)
    return model


def unet(num_classes: int):
    """The default UNet, built by the model registry."""
    from domains.medical.model import create_model, model_spec

    return create_model(model_spec("unet", num_classes=num_classes))


def ours_optimizer(model):
    """The trainer's optimizer (AdamW, fused kernel), same learning rate as the reference's."""
    from domains.medical.training import make_optimizer

    return make_optimizer(model.parameters(), 1e-3, 0.01, torch.device("cpu"))


def ours_step(amp: bool):
    from domains.medical.training import train_memory_format, train_step

    cpu = torch.device("cpu")
    fmt = train_memory_format(cpu, amp)
    return lambda model, b, loss_fn, opt: train_step(model, b, loss_fn, opt, cpu, amp=amp, memory_format=fmt)


def reference_infer(path: str, model, pipe) -> np.ndarray:
    """Tutorial-style inference: LoadImaged + transforms, sliding window (defaults), Invertd on the
    full softmax, argmax."""
    from monai import transforms as mt
    from monai.inferers import sliding_window_inference

    from domains.medical.transforms import intensity_transform

    pre = mt.Compose([mt.LoadImaged(keys="image"), mt.EnsureChannelFirstd(keys="image"), mt.Orientationd(keys="image", axcodes="RAS"),
                      mt.Spacingd(keys="image", pixdim=(pipe.spacing,) * 3, mode="bilinear"), intensity_transform(pipe)])
    d = pre({"image": path})
    model.eval()
    with torch.no_grad():
        d["pred"] = sliding_window_inference(d["image"][None], (pipe.patch,) * 3, 4, model)[0]
    post = mt.Compose([mt.Activationsd(keys="pred", softmax=True),
                       mt.Invertd(keys="pred", transform=pre, orig_keys="image", nearest_interp=False, to_tensor=True),
                       mt.AsDiscreted(keys="pred", argmax=True)])
    return post(d)["pred"][0].numpy().astype(np.uint8)


def ours_infer(path: str, seg) -> np.ndarray:
    from domains.medical.io import load_volume

    return seg.predict_volume(load_volume(path))


def full_size_ct(tmp: Path) -> Path:
    """The real head CT resampled to 512×512×300 (the size users ask about)."""
    import nibabel as nib
    from scipy import ndimage

    from core.data import debian_package_files
    from domains.medical.data import INVESALIUS, read_invesalius_ct

    # the system install or the no-root cache `python -m core.data prepare` fetched it into
    hu, _, aff = read_invesalius_ct(debian_package_files("invesalius-examples", [str(INVESALIUS)])[INVESALIUS.name])
    zoom = (512 / hu.shape[0], 512 / hu.shape[1], 300 / hu.shape[2])
    big = ndimage.zoom(hu.astype(np.float32), zoom, order=1).astype(np.int16)
    aff2 = aff.copy()
    aff2[:3, :3] = aff[:3, :3] @ np.diag([1 / z for z in zoom])
    p = tmp / "ct_512x512x300.nii.gz"
    nib.save(nib.Nifti1Image(big, aff2), str(p))
    return p


def _shown_path(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it (the command line a reader can paste)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-run", default=None, help="a default 3D training run (for Dice and the comparison); default: runs/medical/default "
                    "(python -m domains.medical.train --name default) when it exists, else runs/medical/latest")
    ap.add_argument("--slices-full", default=None, help="2.5D EfficientNet full fine-tuning run; default: runs/medical/slices-full when it exists "
                    "(python -m domains.medical.slices --mode full --name slices-full)")
    ap.add_argument("--slices-lora", default=None, help="2.5D EfficientNet LoRA run; default: runs/medical/slices-lora when it exists "
                    "(python -m domains.medical.slices --mode lora --name slices-lora)")
    ap.add_argument("--steps", type=int, default=12, help="timed training steps per pipeline")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for both pipelines")
    ap.add_argument("--repeats", type=int, default=1, help="speed: measure reference and ours alternately this many times; medians "
                    "(training) and minima (inference, at least 2 runs each) are reported")
    ap.add_argument("--no-write", action="store_true", help="print only, do not touch BENCHMARKS.md")
    ap.add_argument("--part", choices=["all", "speed", "robustness", "prep"], default="all",
                    help="speed: the reference comparison (section 'medical'); robustness: the acquisition variants (section 'medical-robustness'); "
                         "prep: CPU time of each augmentation transform, ours (transforms.FastRand*) vs MONAI's own classes, --steps blocks of "
                         "10 draws per chain (prints, never writes; not part of 'all')")
    ap.add_argument("--standard-run", default=None, help="a model trained the pre-issue-14 way (--augment standard) for the robustness table; "
                    "default: runs/medical/standard (python -m domains.medical.train --name standard --augment standard) when it exists")
    ap.add_argument("--variants", nargs="*", default=None, help="robustness: only these variants (names as in domains.medical.variants)")
    ap.add_argument("--no-atlas", action="store_true", help="robustness: skip the single-atlas registration baseline")
    ap.add_argument("--no-tta", action="store_true", help="robustness: skip the test-time-augmentation column")
    ap.add_argument("--extra-run", action="append", default=[], metavar="LABEL=RUN",
                    help="robustness: another model run as a column (before the default one); repeatable")
    ap.add_argument("--atlas-cached-only", action="store_true", help="robustness: report the atlas only where --atlas-cache has it")
    ap.add_argument("--split", choices=["test", "val", "val-skull"], default="test",
                    help="robustness: test = the held-out MNI152 (BENCHMARKS); val = the deformed Colin27 validation copy that training selects "
                         "on, as every variant — for choosing a recipe without the test volume (models only, no atlas/TTA; prints, never writes); "
                         "val-skull = the same deformed copy of the head WITH its skull (--with-skull's extra validation volume)")
    ap.add_argument("--atlas-cache", default="runs/medical/atlas-variants.json",
                    help="robustness: atlas results per variant are kept here and reused when the atlas config is unchanged ('' = off)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    named = Path("runs") / "medical"  # the runs README's commands create under these names
    for attr, name in (("model_run", "default"), ("slices_full", "slices-full"), ("slices_lora", "slices-lora"), ("standard_run", "standard")):
        if getattr(args, attr) is None and (named / name / "metrics.json").is_file():
            setattr(args, attr, str(named / name))

    if args.part in ("all", "speed"):
        text = speed_and_quality(args)
        print(text)
        if not args.no_write:
            # one section per kind of CPU ("medical" / "medical-no-amx"), so a run on one kind does not overwrite the other's figures
            write_benchmark_section("medical", "## Medical (MONAI segmentation)\n\n" + text, per_cpu=True)
    if args.part == "prep":
        print(augmentation_cost(args))
    if args.part in ("all", "robustness"):
        text = robustness_section(args)
        print(text)
        if not args.no_write and args.split == "test":
            write_benchmark_section("medical-robustness", "## Medical: robustness to acquisition (issue 14)\n\n" + text)
    return 0


def augmentation_cost(args) -> str:
    """CPU time per patch of each random transform of the trainer's augmentation (both recipes) on the
    speed bench's data — Colin27 cached, 48³ patches, 4 per draw — with ours (``transforms.FastRand*``)
    and with MONAI's own classes (``fast=False``), in blocks of 10 draws alternating between the two
    chains (same seed), on this thread (``time.thread_time``: the work done, nearly independent of
    other jobs' load). Also counts the patches that differ between the two and compares their random
    states at the end."""
    from copy import deepcopy

    from monai.data import list_data_collate
    from monai.transforms import RandomizableTrait, Transform, apply_transform

    from domains.medical.config import PipelineConfig
    from domains.medical.data import BRAIN_TASK, read_msd_task, task_dir
    from domains.medical.training import transform_rng_state
    from domains.medical.transforms import cached_patch_dataset

    load0 = os.getloadavg()[0]
    task = read_msd_task(task_dir(BRAIN_TASK))
    pipe = PipelineConfig(modality="MRI", num_classes=task.num_classes)
    blocks, draws = max(2, args.steps), 10
    md = []
    for recipe in ("robust", "standard"):
        chains, cost, block_cpu, outs = {}, {}, {}, {}
        for name in ("MONAI", "ours"):
            ds = cached_patch_dataset(task.training[:1], pipe, draws_per_epoch=1, recipe=recipe, fast=name == "ours").base
            tf = ds.transform
            tf.set_random_state(0)
            first = tf.get_index_of_first(lambda t: isinstance(t, RandomizableTrait) or not isinstance(t, Transform))
            chains[name] = (ds._cache[0], tf, tf.transforms[first:])
            cost[name], block_cpu[name] = {}, []
        differ = patches = 0
        for b in range(blocks):
            for name in (("MONAI", "ours") if b % 2 == 0 else ("ours", "MONAI")):
                cached, _, steps = chains[name]
                c_block, batches = time.thread_time(), []
                for _ in range(draws):
                    c = time.thread_time()
                    data = deepcopy(cached)  # CacheDataset's copy of the cached item
                    cost[name]["(cache copy)"] = cost[name].get("(cache copy)", 0.0) + time.thread_time() - c
                    for t in steps:
                        c = time.thread_time()
                        data = apply_transform(t, data)
                        label = type(t).__name__.removeprefix("Fast")
                        cost[name][label] = cost[name].get(label, 0.0) + time.thread_time() - c
                    c = time.thread_time()
                    batches.append(list_data_collate(data))
                    cost[name]["(collate)"] = cost[name].get("(collate)", 0.0) + time.thread_time() - c
                block_cpu[name].append(time.thread_time() - c_block)
                outs[name] = batches
            for x, y in zip(outs["MONAI"], outs["ours"]):
                patches += x["image"].shape[0]
                differ += sum(int(not (torch.equal(x["image"][i], y["image"][i]) and torch.equal(x["label"][i], y["label"][i])))
                              for i in range(x["image"].shape[0]))
        n = blocks * draws * pipe.num_samples
        same_rng = transform_rng_state(chains["MONAI"][1]) == transform_rng_state(chains["ours"][1])
        ratio = float(np.median([o / m for o, m in zip(block_cpu["ours"], block_cpu["MONAI"])]))
        rows = [{"step": k, "MONAI (ms/patch)": 1e3 * cost["MONAI"].get(k, 0.0) / n, "ours (ms/patch)": 1e3 * cost["ours"].get(k, 0.0) / n}
                for k in cost["MONAI"]]
        rows.append({"step": "**total**", "MONAI (ms/patch)": 1e3 * sum(block_cpu["MONAI"]) / n, "ours (ms/patch)": 1e3 * sum(block_cpu["ours"]) / n})
        md += [f"**{recipe}** augmentation: {n} patches per chain; ours / MONAI, median over the {blocks} paired blocks: **{ratio:.3f}**; "
               f"patches that differ: {differ} of {patches}; random states equal at the end: {'yes' if same_rng else 'NO'}", "",
               markdown_table(rows, ["step", "MONAI (ms/patch)", "ours (ms/patch)"]), ""]
    head = (f"Command: `python bench/medical.py --part prep --steps {args.steps}` — {machine_line()}; 1-min load average "
            f"{load0:.1f} at the start, {os.getloadavg()[0]:.1f} at the end; torch threads {args.threads}. CPU time per patch of each step of the "
            "training augmentation (after the cached preprocessing), on one thread.")
    return "\n".join([head, ""] + md)


def speed_and_quality(args) -> str:
    """The speed table vs the tutorial-style reference and the default run's held-out Dice."""
    from core.device import amp_dtype
    from core.runs import latest_run_dir
    from domains.medical.data import BRAIN_TASK, CT_TASK, read_msd_task, task_dir
    from domains.medical.predict import Segmenter
    from domains.medical.config import PipelineConfig

    load0 = os.getloadavg()[0]
    task = read_msd_task(task_dir(BRAIN_TASK))
    pipe = PipelineConfig(modality="MRI", num_classes=task.num_classes)  # the training defaults: 3 mm, 48³, 4 patches
    case = task.training[0]
    # our pipeline in fp32, and with its default mixed precision when this CPU has bf16 units (AMX)
    variants = [("fp32", False)] + ([("default: bf16 autocast", True)] if amp_dtype(torch.device("cpu")) else [])
    cols = ["measure", "reference"] + [c for name, _ in variants for c in (f"ours {name}", f"ratio {name}")]
    rows_speed: list[dict] = []

    def add(measure: str, ref: float, ours: dict, higher_better: bool) -> None:
        row = {"measure": measure, "reference": ref}
        for name, v in ours.items():
            row[f"ours {name}"] = v
            row[f"ratio {name}"] = (v / ref) if higher_better else (ref / v)
        rows_speed.append(row)

    # training: reference and ours alternate, --repeats times (the machine's load drifts; medians are reported)
    loaders = {"standard": lambda: ours_train_loader(case, pipe), "robust": lambda: ours_train_loader(case, pipe, recipe="robust"),
               "synth": lambda: ours_synth_loader(pipe), "step": lambda: one_batch_repeated(ours_train_loader(case, pipe))}
    kinds = (("standard", "standard augmentation"), ("robust", "default (robust) augmentation"),
             ("synth", "synth pipeline"), ("step", "our training step alone, one batch repeated (no data preparation in the loop)"))
    tr: dict = {}
    for _ in range(args.repeats):
        gc.collect()
        torch.manual_seed(0)
        tr.setdefault("reference", []).append(train_throughput(reference_train_loader(case, pipe), unet(task.num_classes), args.steps, reference_step))
        for kind, make in loaders.items():
            for name, amp in variants:
                gc.collect()
                torch.manual_seed(0)
                tr.setdefault((kind, name), []).append(train_throughput(make(), ours_model(task.num_classes, amp), args.steps, ours_step(amp),
                                                                          make_opt=ours_optimizer))
    med = {k: [float(np.median([r[i] for r in v])) for i in range(3)] for k, v in tr.items()}
    for kind, label in kinds:
        add(f"training throughput, {label} (patches/s, higher is better)", med["reference"][0],
            {name: med[(kind, name)][0] for name, _ in variants}, True)
    for kind, label in kinds:
        add(f"training CPU time per patch, {label} (CPU s of all the process's threads; ratio = reference / ours)", med["reference"][2],
            {name: med[(kind, name)][2] for name, _ in variants}, False)
    rows_speed.append({"measure": "training peak RSS, standard augmentation (MB)", "reference": med["reference"][1], **{f"ours {k}": med[("standard", k)][1] for k, _ in variants},
                       **{f"ratio {k}": med[("standard", k)][1] / med["reference"][1] for k, _ in variants}})

    model_run = Path(args.model_run) if args.model_run else None
    if model_run is None:
        try:
            model_run = latest_run_dir("medical")
        except FileNotFoundError:
            model_run = None
    seg = Segmenter.from_run(model_run) if model_run else Segmenter(unet(task.num_classes).eval(), pipe, task.class_names)
    test_img = task.test[0]["image"]
    inf: dict = {}
    for _ in range(max(2, args.repeats)):  # interleaved; the fastest of each is reported
        inf.setdefault("reference", []).append(_timed(lambda: reference_infer(test_img, seg.model, pipe)))
        for name, amp in variants:
            seg.amp = amp
            inf.setdefault(name, []).append(_timed(lambda: ours_infer(test_img, seg)))
    best = {k: (min(w for w, _ in v), min(c for _, c in v)) for k, v in inf.items()}
    add("sliding-window inference per volume, file → mask on input grid (s, MNI152 197×233×189; ratio = reference / ours)",
        best["reference"][0], {name: best[name][0] for name, _ in variants}, False)
    add("sliding-window inference per volume, CPU time (CPU s; ratio = reference / ours)",
        best["reference"][1], {name: best[name][1] for name, _ in variants}, False)

    # full-size CT memory (untrained CT net: memory and time do not depend on the weights)
    ct = read_msd_task(task_dir(CT_TASK))
    ct_pipe = PipelineConfig(modality="CT", num_classes=ct.num_classes)
    ct_seg = Segmenter(unet(ct.num_classes).eval(), ct_pipe, ct.class_names)
    m_our, t_our_ct = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        big = full_size_ct(Path(tmp))
        gc.collect()
        with PeakRSS() as m_ref:
            t_ref_ct = _timed(lambda: reference_infer(str(big), ct_seg.model, ct_pipe))[0]
        for name, amp in variants:
            ct_seg.amp = amp
            gc.collect()
            with PeakRSS() as m:
                t_our_ct[name] = _timed(lambda: ours_infer(str(big), ct_seg))[0]
            m_our[name] = m.delta_mb
    rows_speed.append({"measure": "inference on a 512×512×300 CT: peak RSS above start (MB; ratio = ours / reference)", "reference": m_ref.delta_mb,
                       **{f"ours {k}": v for k, v in m_our.items()}, **{f"ratio {k}": v / max(m_ref.delta_mb, 1e-9) for k, v in m_our.items()}})
    add("inference on a 512×512×300 CT: time (s; ratio = reference / ours)", t_ref_ct, t_our_ct, False)

    run_flag = f" --model-run {_shown_path(model_run)}" if args.model_run and model_run else ""
    md = [f"Command: `python bench/medical.py --part speed --steps {args.steps} --repeats {args.repeats}{run_flag}` — {machine_line()}; "
          f"1-min load average {load0:.1f} at the start, {os.getloadavg()[0]:.1f} at the end "
          "(2 cores: a load above 2 means other jobs shared them; seconds then vary, ratios within the run stay fair, and the CPU-time rows "
          f"hardly depend on it); torch threads {args.threads} for both pipelines. "
          "Reference = MONAI spleen-tutorial style (plain Dataset + DataLoader re-preprocessing every batch, fp32; "
          "`sliding_window_inference` with its defaults then `Invertd` of the full softmax), same UNet(16,32,64,128), same data "
          "(Colin27 → MNI152), 3 mm, 48³ patches, 4 per step. Ours = `domains.medical` (cached preprocessing, batches prepared on a "
          "background thread while the step computes (`training.prefetch`, as the trainer does; the reference draws its batches in the loop, "
          "`num_workers=0`; since session 5 the augmentation's affine, histogram-shift, gamma and bias-field steps are MONAI subclasses "
          "(`transforms.FastRand*`) with MONAI's random draws and values, computed without MetaTensor overhead), the trainer's own `train_step`, model layout (`training.to_train_layout`: fp32 on the CPU in channels-last, instance norms as one-channel group norms) and optimizer (AdamW with its fused kernel), `Segmenter.predict_volume`: the same sliding window (overlap 0.25, "
          "Gaussian blending), then the softmax resampled back to the input grid only inside the box the network labelled foreground, "
          "axis by axis when the grids are axis-aligned). "
          f"Training: {args.steps} timed steps after 2 warm-up steps, pipelines alternating, medians over {args.repeats} repeat(s); "
          "inference: the fastest of alternating runs. Ratios are measured in this run; > 1 means ours is faster. "
          + ("Ours runs twice: in fp32, and with its default mixed precision, which this CPU supports (bf16 matrix units, AMX); "
             "on a CPU without them the default is the fp32 column." if len(variants) > 1 else
             "This CPU has no bf16 matrix units, so our default is fp32 here."), "",
          markdown_table(rows_speed, cols)]
    if model_run and (model_run / "metrics.json").is_file():
        met = json.loads((model_run / "metrics.json").read_text())
        dice_rows = [{"class": c, "Dice (held-out MNI152)": met.get(f"test_dice/{c}"), "HD95 mm": met.get(f"test_hd95/{c}")} for c in task.class_names[1:]]
        dice_rows.append({"class": "**mean foreground**", "Dice (held-out MNI152)": met.get("test_mean_dice"), "HD95 mm": ""})
        dice_rows.append({"class": "public anchor: MONAI spleen bundle, MSD Task09 (different task/organ)", "Dice (held-out MNI152)": 0.96, "HD95 mm": ""})
        md += ["", f"Held-out quality of the default 3D run `{model_run.name}` (train Colin27, test MNI152 with AAL carried over by "
               "nearest-neighbour resampling — an approximation of a tracing):", "",
               markdown_table(dice_rows, ["class", "Dice (held-out MNI152)", "HD95 mm"])]
        m3d = json.loads((model_run / "task.json").read_text())["model"]["name"] if (model_run / "task.json").is_file() else "?"
        comp = [_comp_row(f"3D {m3d} (random init)", model_run)]
        for label, r in (("2.5D EfficientNet-Lite0 ImageNet, full fine-tuning", args.slices_full), ("2.5D EfficientNet-Lite0 ImageNet, LoRA r=8", args.slices_lora)):
            if r:
                comp.append(_comp_row(label, Path(r)))
        if len(comp) > 1:
            md += ["", "3D network vs the core's 2.5D pretrained encoder (same held-out MNI152 evaluation):", "",
                   markdown_table(comp, list(comp[0]))]
    return "\n".join(md)


def robustness_section(args) -> str:
    from core.bench import machine_line as _ml
    from domains.medical.data import BRAIN_TASK, read_msd_task, read_synthesis, task_dir

    root = task_dir(BRAIN_TASK)
    task = read_msd_task(root)
    runs = {}
    if args.standard_run:
        runs["standard"] = Path(args.standard_run)
    for spec in args.extra_run:
        label, _, path = spec.partition("=")
        runs[label] = Path(path)
    new = Path(args.model_run).name if args.model_run else None  # the run the table is about: labelled by its folder name
    if args.model_run:
        runs[new] = Path(args.model_run)
    if args.split in ("val", "val-skull"):
        with tempfile.TemporaryDirectory() as tmp:
            image, label = validation_files(task, Path(tmp), with_skull=args.split == "val-skull")
            rows, raw = robustness(image, label, runs, None, tta=False, names=args.variants, class_names=task.class_names,
                                   log=lambda m: print(m, flush=True))
        means = "; ".join(f"{k}: min {min(r[k]['mean'] for r in raw.values()):.3f}, mean {np.mean([r[k]['mean'] for r in raw.values()]):.3f}"
                          for k in runs)
        copy = "deformed Colin27 head WITH skull" if args.split == "val-skull" else "deformed Colin27 copy"
        return "\n".join([f"VALIDATION ({copy}, 1 mm, as each variant; never MNI152) — {_ml()}", "", markdown_table(rows), "",
                          f"Summary over {len(raw)} variants — {means}."])
    synth = read_synthesis(root)
    atlas = None if args.no_atlas or synth is None else {"head": synth["head"], "brain": task.training[0]["image"], "labels": task.training[0]["label"]}
    rows, raw = robustness(task.test[0]["image"], task.test[0]["label"], runs, atlas, tta=not args.no_tta, names=args.variants,
                           class_names=task.class_names, log=lambda m: print(m, flush=True),
                           atlas_cache_path=Path(args.atlas_cache) if args.atlas_cache else None, atlas_cached_only=args.atlas_cached_only)
    if new is None:
        return "\n".join(["(atlas only)", markdown_table(rows)])
    raw_key = new
    keys = list(dict.fromkeys(k for r in raw.values() for k in r))  # every column, first-seen order
    means = {k: [r[k]["mean"] for r in raw.values() if k in r] for k in keys}
    worst_variant = min(raw, key=lambda v: raw[v][raw_key]["mean"])
    summary = ", ".join(f"{k}: min {min(v):.3f}, mean {np.mean(v):.3f} over {len(v)} variants" for k, v in means.items())
    plain = raw.get("plain", {})
    drop = (f" Plain volume: {new} {plain[new]['mean']:.3f} vs standard {plain['standard']['mean']:.3f}."
            if "standard" in plain else "")
    cols = ["variant", *keys, *dict.fromkeys(c for r in rows for c in r if c.startswith("s/vol"))]
    md = [f"Command: `python bench/medical.py --part robustness` — {_ml()}, torch threads {args.threads}, run under load from other "
          "jobs on this machine (seconds are not comparable across runs; Dice is). Test volume: the held-out MNI152 T1 (skull-stripped) "
          "with AAL carried over from Colin27, as each variant of `domains/medical/variants.py` (resampled with a slice/pixel profile "
          "onto a grid acquired in that plane; labels evaluated on the variant's own grid, nearest neighbour at the voxel centres). "
          "Cells: mean foreground Dice (worst class and its Dice). Runs: "
          + "; ".join(f"{k} = `{p}`" for k, p in runs.items())
          + ". Every network column runs the default inference: the sliding window over the box of non-zero voxels "
          "(`Segmenter(crop=True)`, `--no-crop` to disable). LCC = largest connected component per single-structure class; TTA = left-right mirroring with lateral labels swapped "
          "(`domains.medical.postprocess`). atlas = `domains.medical.atlas` (Colin27 → input, SimpleITK affine + B-spline, labels by "
          "nearest neighbour; the skull-stripped Colin27 for skull-stripped inputs). Caveat: the test labels are Colin27's own AAL "
          "carried over by coordinates, so the atlas baseline transfers the very labels that define the truth."
          + (f" Atlas cells come from `{args.atlas_cache}`, written by an earlier pass of this command with the same atlas config "
             "(`--variants ...` without model runs); variants without a cached atlas result have no atlas cell." if args.atlas_cached_only else ""),
          "",
          markdown_table(rows, cols), "", f"Summary over {len(raw)} variants — {summary}. Worst variant for {new}: {worst_variant}.{drop}"]
    return "\n".join(md)


def validation_files(task, out_dir: Path, with_skull: bool = False) -> tuple[str, str]:
    """The validation case training selects on (``training.validation_case``: the fixed deformed Colin27
    copy, 1 mm) as NIfTI image + label in ``out_dir``, for ``--split val``. Written on the undeformed
    volume's RAS grid (MONAI's ``Affined`` also folds its deformation into the affine, which would undo
    it in world space) with its background back at 0 (the copy's gamma, ``retain_stats``, lifts it by
    ~0.001; the variants' T2-like inversion treats every voxel above 0 as head)."""
    import nibabel as nib

    from domains.medical.config import PipelineConfig
    from domains.medical.training import validation_case
    from domains.medical.transforms import preprocess

    _, vol, lab = validation_case(task, spacing=1.0, with_skull=with_skull)
    case = task.training[0] if len(task.training) < 2 else task.training[-1]
    affine = np.asarray(preprocess(PipelineConfig(modality=task.modality, num_classes=task.num_classes, spacing=1.0), crop=False)(dict(case))["image"].affine,
                        dtype=np.float64)
    img = np.where(vol.data > vol.data.min() + 1e-3, vol.data, 0).astype(np.float32)
    paths = (str(out_dir / "validation.nii.gz"), str(out_dir / "validation_label.nii.gz"))
    nib.save(nib.Nifti1Image(img, affine), paths[0])
    nib.save(nib.Nifti1Image(lab.astype(np.uint8), affine), paths[1])
    return paths


def _short(name: str) -> str:
    return {"cerebrum_left": "cerL", "cerebrum_right": "cerR", "cerebellum": "cblm", "deep_grey_nuclei": "DGN"}.get(name, name)


def score_mask(mask: np.ndarray, label: np.ndarray, class_names: list[str]) -> dict:
    """Mean foreground Dice and the worst class of one mask (same grid as ``label``)."""
    from domains.medical.metrics import dice_per_class

    d = dice_per_class(mask, label, class_names)
    worst = min(d, key=lambda k: d[k])
    return {"mean": float(np.mean(list(d.values()))), "worst": worst, "worst_dice": float(d[worst]), "per_class": d}


def robustness(test_image: str, test_label: str, runs: dict[str, Path], atlas_sources: dict | None, tta: bool, names: list[str] | None,
               class_names: list[str], log=print, atlas_cache_path: Path | None = None, atlas_cached_only: bool = False) -> tuple[list[dict], dict]:
    """Every variant of the held-out volume (``domains.medical.variants``) segmented by each run
    (no post-processing), every run but ``standard`` also with LCC, the last with LCC + TTA, and by the single-atlas
    baseline (its results are cached in ``atlas_cache_path``, keyed by variant and atlas config, so
    a separate earlier pass can compute them). Returns the table rows and the raw per-variant results."""
    import nibabel as nib

    from domains.medical.io import load_volume
    from domains.medical.postprocess import keep_largest_components
    from domains.medical.predict import Segmenter
    from domains.medical.variants import write_variants

    segs = {k: Segmenter.from_run(r) for k, r in runs.items()}
    new_key = list(runs)[-1] if runs else None
    seg_tta = Segmenter.from_run(runs[new_key], tta=True) if tta and runs else None
    atlas = None
    atlas_cache: dict = {}
    if atlas_sources:
        from domains.medical.atlas import AtlasConfig, AtlasSegmenter

        atlas = AtlasSegmenter(atlas_sources["head"], atlas_sources["brain"], atlas_sources["labels"])
        if atlas_cache_path and atlas_cache_path.is_file():  # atlas results do not depend on the networks: reuse a previous pass
            cached = json.loads(atlas_cache_path.read_text())
            if cached.pop("_config", None) == repr(AtlasConfig()):
                atlas_cache = cached
        atlas_cache["_config"] = repr(AtlasConfig())
    raw: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for v in write_variants(test_image, test_label, tmp, names):
            lab = np.asarray(nib.load(v["label"]).dataobj).astype(np.uint8)
            vol = load_volume(v["image"])
            res: dict[str, dict] = {}
            for k, seg in segs.items():
                t0 = time.perf_counter()
                mask = seg.predict_volume(vol)
                res[k] = {**score_mask(mask, lab, seg.class_names), "seconds": time.perf_counter() - t0}
                if k != "standard":
                    res[f"{k} + LCC"] = score_mask(keep_largest_components(mask, seg.class_names), lab, seg.class_names)
            if seg_tta is not None:
                t0 = time.perf_counter()
                mask = keep_largest_components(seg_tta.predict_volume(vol), seg_tta.class_names)
                res[f"{new_key} + LCC + TTA"] = {**score_mask(mask, lab, seg_tta.class_names), "seconds": time.perf_counter() - t0}
            if atlas is not None:
                key = v["variant"]
                if key not in atlas_cache and atlas_cached_only:
                    raw[v["variant"]] = res
                    continue
                if key not in atlas_cache:
                    mask = atlas.predict_file(v["image"])
                    atlas_cache[key] = {**score_mask(mask, lab, class_names), "seconds": atlas.last_seconds, "template": atlas.last_template}
                    if atlas_cache_path:
                        atlas_cache_path.write_text(json.dumps(atlas_cache, indent=1))
                res["atlas"] = atlas_cache[key]
            raw[v["variant"]] = res
            log(f"{v['variant']}: " + ", ".join(f"{k} {r['mean']:.3f}" for k, r in res.items()))
    rows = []
    for name, res in raw.items():
        row = {"variant": name}
        for k, r in res.items():
            row[k] = f"{r['mean']:.3f} ({_short(r['worst'])} {r['worst_dice']:.2f})"
        if new_key:
            row[f"s/vol {new_key}"] = res[new_key]["seconds"]
        if "atlas" in res:
            row["s/vol atlas"] = res["atlas"]["seconds"]
        rows.append(row)
    return rows, raw


def _comp_row(label: str, run: Path) -> dict:
    met = json.loads((run / "metrics.json").read_text())
    row = {"model": label, "mean Dice": met.get("test_mean_dice")}
    for c in ("cerebrum_left", "cerebrum_right", "cerebellum", "deep_grey_nuclei"):
        row[c] = met.get(f"test_dice/{c}")
    row["trainable params"] = met.get("trainable_params") or _count_params(run)
    row["train s"] = met.get("train_seconds")
    return row


def _count_params(run: Path) -> int | None:
    try:
        from safetensors import safe_open

        with safe_open(str(run / "best.safetensors"), "pt") as f:
            return int(sum(np.prod(f.get_slice(k).get_shape()) for k in f.keys()))
    except Exception:  # noqa: BLE001
        return None


def _timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of ``fn()``."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


if __name__ == "__main__":
    sys.exit(main())
