"""Fine-tuning toolkit on two real tasks, every number from one run; writes section "finetune" of BENCHMARKS.md.

Task A — brain-lobe patches (medical): 64×64 mm patches from axial and coronal slices of the real Colin27
T1 MRI (``/usr/share/mricron/templates/ch2.nii.gz``), labelled with the lobe (frontal, parietal, temporal,
occipital, limbic/deep grey, cerebellum) of the expert AAL region at the patch centre (``aal.nii.gz``, same
grid). Train on patches centred in left-hemisphere regions, test on right-hemisphere ones (no spatial
leakage). Backbone: EfficientNet-Lite0, ImageNet weights from the installed package vs random init.
Metric: balanced accuracy.

Task B — MovieLens-100K text tower (recommendation): predict an item's genres (multi-label, 19) from its
title + release year with the MiniLM-L6 sentence encoder; 80/20 random item split. Metric: macro ROC-AUC.

Rows per task: full fine-tuning (reference for time and latency), LoRA (merged for latency), BitFit,
random init (task A), int8 (torchao: PT2E x86 quantizer for the CNN, quantize_ int8 dynamic for the transformer, + Inductor; also ONNX Runtime int8), and a distilled student
with ≥ 4× fewer parameters. Time/epoch and latency are ratios to the full-FT model measured in this run.

    python -m bench.finetune            # full (task A ≈ 7 min, task B ≈ 12 min with --seed-workers 1; tasks in parallel processes)
    python -m bench.finetune --quick    # smoke run, seconds-to-a-minute; does not touch BENCHMARKS.md unless --write
    python -m bench.finetune --select A # the validation search behind the task-A student (B, B-longer: earlier task-B LoRA searches);
                                        # the training data split into fit / validation, the test split never loaded
    python -m bench.finetune --select B-cv [--units 0.0,0.2] [--select-out f.json]   # the task-B LoRA search behind LORA_B:
                                        # repeated 5-fold cross-validation over the training items (units may run in two
                                        # processes; `--select B-cv --select-from f1.json,f2.json` applies the rule to their records)
    python -m bench.finetune --tasks B --reuse A --seed-workers 1   # task B alone, its seeds 2-4 in a second process

The student (:data:`STUDENT_A`) and the LoRA setting (:data:`LORA_B`) are the ones ``--select`` ranked first.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from core.backbones import create_backbone  # noqa: E402
from core.bench import cpu_latency, machine_line, markdown_table, write_benchmark_section  # noqa: E402
from core.compress import OnnxRunner, export_onnx, model_size_bytes, quantize_int8, quantize_onnx_int8  # noqa: E402
from core.distill import DistillationLoss  # noqa: E402
from core.finetune import (  # noqa: E402
    apply_bitfit,
    apply_lora,
    discriminative_param_groups,
    merge_lora,
    save_adapter,
    trainable_parameter_report,
)

COLIN = Path("/usr/share/mricron/templates/ch2.nii.gz")
AAL = Path("/usr/share/mricron/templates/aal.nii.gz")
AAL_NAMES = Path("/usr/share/mricron/templates/aal.nii.txt")
LOBES = ["frontal", "parietal", "temporal", "occipital", "limbic/deep", "cerebellum"]


@dataclass
class Budget:
    n_train: int = 512
    n_test: int = 384
    img_epochs: int = 3
    text_epochs: int = 7  # task B full FT (and BitFit): the reference's epoch count chosen on validation (--select B-cv)
    student_epochs: int = 8
    latency_repeats: int = 5
    compile_int8: bool = True
    onnx: bool = True
    seeds: tuple = (0, 1, 2)  # seeds of task A's target row (the student); other rows use seed 0
    lora_epochs: int | None = None  # task-B LoRA epochs; None: LORA_B.epochs (chosen on validation), else text_epochs
    lora_seeds: tuple = (0, 1, 2, 3, 4)  # seeds of task B's target row: LoRA and its full-FT reference trained with each seed


QUICK = Budget(n_train=64, n_test=64, img_epochs=1, text_epochs=1, student_epochs=1, latency_repeats=1, compile_int8=False, onnx=False, seeds=(0,),
               lora_epochs=1, lora_seeds=(0,))

# the Budget fields each task reads: a cached task (--reuse) must match these, not the other task's
BUDGET_FIELDS = {"A": ("n_train", "n_test", "img_epochs", "student_epochs", "latency_repeats", "compile_int8", "onnx", "seeds"),
                 "B": ("n_train", "n_test", "text_epochs", "student_epochs", "latency_repeats", "compile_int8", "onnx", "lora_epochs",
                       "lora_seeds")}


def log(msg: str) -> None:
    print(f"[bench.finetune {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ------------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------------


def lobe_of(name: str) -> int | None:
    n = name.lower()
    if n.startswith("vermis"):
        return None  # midline: no hemisphere for the split
    if n.startswith("cerebelum"):
        return 5
    if n.startswith(("calcarine", "cuneus", "lingual", "occipital")):
        return 3
    if n.startswith(("temporal", "heschl", "fusiform")):
        return 2
    if n.startswith(("postcentral", "parietal", "supramarginal", "angular", "precuneus", "paracentral")):
        return 1
    if n.startswith(("caudate", "putamen", "pallidum", "thalamus", "insula", "cingulum", "hippocampus", "parahippocampal", "amygdala")):
        return 4
    return 0  # precentral, frontal_*, rolandic, supp_motor, olfactory, rectus


def lobe_patches(n_train: int, n_test: int, size: int = 64, seed: int = 0):
    import nibabel as nib

    from core.data import debian_package_files  # the system install, else the no-root cache of `core.data prepare`

    try:
        files = debian_package_files("mricron-data", [str(COLIN), str(AAL), str(AAL_NAMES)])
    except Exception as e:  # noqa: BLE001 - one line, not a traceback
        raise SystemExit(f"missing Colin27/AAL: {e} (see DATA.md)") from e
    colin, aal_path, aal_names = files[COLIN.name], files[AAL.name], files[AAL_NAMES.name]
    img = np.asarray(nib.load(str(colin)).dataobj, dtype=np.float32)
    aal = np.asarray(nib.load(str(aal_path)).dataobj).astype(np.int64)
    lo, hi = np.percentile(img[img > 0], [0.5, 99.5])
    img = np.clip((img - lo) / (hi - lo), 0, 1) * 2 - 1  # [-1, 1]: the weights' mean/std of 0.5
    lut = np.full(aal.max() + 1, -1)
    side = np.zeros(aal.max() + 1, dtype="<U1")
    for line in aal_names.read_text().splitlines():
        if len(line.split()) < 2:
            continue
        idx, name = line.split()[:2]
        lobe = lobe_of(name)
        if lobe is not None:
            lut[int(idx)] = lobe
            side[int(idx)] = name[-1]
    half = size // 2
    padded = np.pad(img, half, constant_values=-1)
    rng = np.random.default_rng(seed)
    out = {}
    for split, hemi, n in (("train", "L", n_train), ("test", "R", n_test)):
        vox = np.argwhere((lut[aal] >= 0) & (side[aal] == hemi))
        # balance classes: equal number of centres per lobe
        labels = lut[aal[tuple(vox.T)]]
        per = int(np.ceil(n / len(LOBES)))
        pick = np.concatenate([rng.choice(np.flatnonzero(labels == c), per, replace=False) for c in range(len(LOBES))])[:n]
        rng.shuffle(pick)
        xs, ys = [], []
        for j, (x, y, z) in enumerate(vox[pick]):
            x, y, z = x + half, y + half, z + half
            if j % 2 == 0:  # axial slice
                patch = padded[x - half : x + half, y - half : y + half, z]
            else:  # coronal slice
                patch = padded[x - half : x + half, y, z - half : z + half]
            xs.append(patch)
            ys.append(labels[pick[j]])
        out[split] = (torch.from_numpy(np.stack(xs))[:, None].float(), torch.tensor(ys))
    return out


def movielens_titles():
    import recbole

    path = Path(recbole.__file__).parent / "dataset_example/ml-100k/ml-100k.item"
    if not path.is_file():
        raise SystemExit(f"missing {path}: install recbole --no-deps (see DATA.md)")
    titles, genres = [], []
    for line in path.read_text(encoding="latin-1").splitlines()[1:]:
        parts = line.split("\t")
        if len(parts) < 4:
            continue
        titles.append(f"{parts[1]} ({parts[2]})" if parts[2] else parts[1])
        genres.append(parts[3].split())
    vocab = sorted({g for gs in genres for g in gs})
    y = torch.zeros(len(titles), len(vocab))
    for i, gs in enumerate(genres):
        for g in gs:
            y[i, vocab.index(g)] = 1
    return titles, y, vocab


# ------------------------------------------------------------------------------------------------
# training / evaluation helpers
# ------------------------------------------------------------------------------------------------


def balanced_accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    pred = logits.argmax(1)
    return float(np.mean([float((pred[y == c] == c).float().mean()) for c in y.unique()]))


def macro_auc(logits: torch.Tensor, y: torch.Tensor) -> float:
    from sklearn.metrics import roc_auc_score

    keep = [j for j in range(y.shape[1]) if 0 < y[:, j].sum() < len(y)]
    return float(roc_auc_score(y[:, keep].numpy(), logits[:, keep].float().numpy(), average="macro"))


@torch.no_grad()
def predict(fn, inputs: tuple, batch: int = 32) -> torch.Tensor:
    """Run ``fn`` over fixed-size batches (the last one padded: compiled int8 graphs have a static shape)."""
    n = inputs[0].shape[0]
    outs = []
    for i in range(0, n, batch):
        chunk = [x[i : i + batch] for x in inputs]
        k = chunk[0].shape[0]
        if k < batch:
            chunk = [torch.cat([c, c[:1].expand(batch - k, *c.shape[1:])]) for c in chunk]
        outs.append(fn(*chunk)[:k].float())
    return torch.cat(outs)


def train_epochs(model, opt, inputs: tuple, y: torch.Tensor, loss_fn, epochs: int, batch: int, seed: int = 0,
                 teacher_logits: torch.Tensor | None = None, trim_mask: bool = False, on_epoch=None) -> float:
    """Train; returns mean CPU seconds per epoch (process time: on a shared machine wall time mostly measures
    the neighbours). ``trim_mask``: inputs are (ids, mask), cut padding per batch. ``on_epoch(e)`` is called
    (model in eval mode) after epoch ``e`` (1-based) — the validation search scores every epoch count in one run."""
    g = torch.Generator().manual_seed(seed)
    n = len(y)
    times = []
    for _ in range(epochs):
        model.train()
        t0 = time.process_time()
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, batch):
            idx = perm[i : i + batch]
            xb = [x[idx] for x in inputs]
            if trim_mask:
                L = int(xb[1].sum(1).max())
                xb = [x[:, :L] for x in xb]
            out = model(*xb)
            loss = loss_fn(out, teacher_logits[idx], y[idx]) if teacher_logits is not None else loss_fn(out, y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        times.append(time.process_time() - t0)
        if on_epoch is not None:
            model.eval()
            on_epoch(len(times))
    model.eval()
    return float(np.mean(times))


@dataclass
class Row:
    task: str
    variant: str
    trainable: int
    total: int
    epoch_s: float | None
    metric: float
    size_bytes: int | None
    latency_s: float | None
    note: str = ""
    extra: dict = field(default_factory=dict)


def _mb(b):
    return f"{b / 2**20:.2f} MB" if b else "–"



# ------------------------------------------------------------------------------------------------
# task A: brain lobes with EfficientNet-Lite0
# ------------------------------------------------------------------------------------------------


def task_lobes(b: Budget, tmp: Path) -> list[Row]:
    log("task A: loading Colin27 T1 + AAL patches")
    data = lobe_patches(b.n_train, b.n_test)
    (xtr, ytr), (xte, yte) = data["train"], data["test"]
    C = len(LOBES)
    rows: list[Row] = []
    ce = nn.CrossEntropyLoss()
    bs = 64

    def make(pretrained=True):
        torch.manual_seed(0)
        return create_backbone("tf_efficientnet_lite0", pretrained=pretrained, num_classes=C, in_chans=1, drop_rate=0.2)

    def run(name, model, lr, pretrained_note=""):
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=1e-4)
        ep = train_epochs(model, opt, (xtr,), ytr, ce, b.img_epochs, bs)
        logits = predict(model, (xte,))
        m = balanced_accuracy(logits, yte)
        rep = trainable_parameter_report(model)
        log(f"  {name}: bal.acc {m:.3f}, {ep:.1f} s/epoch, trainable {rep['trainable']}")
        return model, ep, m, rep, logits

    full, ep_full, m_full, rep_full, logits_full = run("full FT (ImageNet init)", make(True), 1e-3)
    x_lat = xte[:32]
    lat_full = cpu_latency(full, (x_lat,), b.latency_repeats)
    size_full = model_size_bytes(full)
    rows.append(Row("A lobes", "full FT, ImageNet init", rep_full["trainable"], rep_full["total"], ep_full, m_full, size_full, lat_full))

    rnd, ep_r, m_r, rep_r, _ = run("full FT (random init)", make(False), 1e-3)
    rows.append(Row("A lobes", "full FT, random init", rep_r["trainable"], rep_r["total"], ep_r, m_r, model_size_bytes(rnd), None,
                    note="same steps as ImageNet init"))
    del rnd

    lora = apply_lora(make(True), r=4, alpha=8, trainable=["*bn*"])
    lora, ep_l, m_l, rep_l, _ = run("LoRA r=4 (+BN)", lora, 1e-2)  # LoRA starts at B=0: it needs a larger step
    ad = save_adapter(lora, tmp / "lobes_lora.safetensors")
    merge_lora(lora)
    lat_l = cpu_latency(lora, (x_lat,), b.latency_repeats)
    rows.append(Row("A lobes", "LoRA r=4 + BN affine, merged", rep_l["trainable"], rep_l["base_total"], ep_l, m_l, ad.stat().st_size, lat_l,
                    note="adapter file size; latency after merge"))
    del lora

    bit = apply_bitfit(make(True))
    bit, ep_b, m_b, rep_b, _ = run("BitFit", bit, 3e-3)
    ad_b = save_adapter(bit, tmp / "lobes_bitfit.safetensors")
    rows.append(Row("A lobes", "BitFit (biases + head)", rep_b["trainable"], rep_b["total"], ep_b, m_b, ad_b.stat().st_size, None))
    del bit

    rows += int8_rows("A lobes", full, (x_lat,), (xte,), yte, balanced_accuracy, m_full, lat_full, [(xtr[i : i + 32],) for i in range(0, min(256, len(xtr) - 31), 32)], b, tmp)

    # distilled student: the first 5 stages of the fine-tuned teacher (EfficientNet-Lite0, 4.8x fewer parameters) with a new
    # head, distilled from the teacher's logits (settings chosen on validation patches: --select A)
    cfg = STUDENT_A
    student, ep_s = train_lobes_student(cfg, full, xtr, ytr, C, b.student_epochs, seed=0)
    m_s = balanced_accuracy(predict(student, (xte,)), yte)
    rep_s = trainable_parameter_report(student)
    seeds = [m_s]
    for seed in b.seeds[1:]:  # the target row over more seeds (student init and batch order; the teacher is fixed)
        seeds.append(balanced_accuracy(predict(train_lobes_student(cfg, full, xtr, ytr, C, b.student_epochs, seed=seed)[0], (xte,)), yte))
    rows.append(Row("A lobes", f"distilled student ({cfg.label})", rep_s["trainable"], rep_s["total"], ep_s, m_s,
                    model_size_bytes(student), cpu_latency(student, (x_lat,), b.latency_repeats),
                    note=f"{rep_full['total'] / rep_s['total']:.1f}× fewer params; {b.student_epochs} epochs; T={cfg.temperature:g}, α={cfg.alpha:g}"
                         + (f"; {cfg.copies}× shifted patches" if cfg.copies > 1 else ""),
                    extra={"teacher": m_full, "seeds": seeds}))
    log(f"  student: bal.acc {m_s:.3f} vs teacher {m_full:.3f}")
    return rows


# ------------------------------------------------------------------------------------------------
# task A student (shared by the benchmark and the validation search, ``--select A``)
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StudentA:
    init: str = "imagenet"  # "imagenet": first `stages` stages of ImageNet EfficientNet-Lite0; "teacher": of the fine-tuned teacher; "random": MobileNetV3-S-0.5
    stages: int = 5
    temperature: float = 4.0
    alpha: float = 0.7
    lr: float = 3e-3
    copies: int = 1  # transfer set: the training patches plus copies-1 randomly shifted copies, with the teacher's logits on each
    shift: int = 6  # max shift in pixels of the copies

    @property
    def label(self) -> str:
        if self.init == "random":
            return "MobileNetV3-S-0.5, random init"
        return f"EfficientNet-Lite0 stages 1-{self.stages}, {'ImageNet' if self.init == 'imagenet' else 'teacher'} init"


STUDENT_A = StudentA(init="teacher")  # chosen on validation patches: python -m bench.finetune --select A


def shifted_copies(x: torch.Tensor, copies: int, shift: int, seed: int = 0) -> torch.Tensor:
    """``x`` followed by ``copies - 1`` copies shifted by up to ``shift`` pixels (background fill -1)."""
    if copies <= 1:
        return x
    g = torch.Generator().manual_seed(seed)
    n, _, h, w = x.shape
    pad = torch.nn.functional.pad(x, (shift, shift, shift, shift), value=-1.0)
    out = [x]
    for _ in range(copies - 1):
        dy, dx = torch.randint(0, 2 * shift + 1, (2, n), generator=g)
        out.append(torch.stack([pad[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)]))
    return torch.cat(out)


def make_student_a(cfg: StudentA, teacher: nn.Module, num_classes: int, seed: int = 0) -> nn.Module:
    from core.distill import TruncatedStudent

    torch.manual_seed(seed)
    if cfg.init == "random":
        return create_backbone("mobilenetv3_small_050", pretrained=False, num_classes=num_classes, in_chans=1)
    src = teacher if cfg.init == "teacher" else create_backbone("tf_efficientnet_lite0", pretrained=True, num_classes=num_classes, in_chans=1)
    return TruncatedStudent(src, cfg.stages, num_classes, drop_rate=0.2)


def train_lobes_student(cfg: StudentA, teacher: nn.Module, xtr: torch.Tensor, ytr: torch.Tensor, num_classes: int, epochs: int,
                        seed: int = 0) -> tuple[nn.Module, float]:
    """Distil ``teacher`` into a fresh student on the transfer set built from ``xtr``; returns (student, CPU s/epoch)."""
    xs = shifted_copies(xtr, cfg.copies, cfg.shift, seed=seed)
    ys = ytr.repeat(cfg.copies)
    teacher.eval()
    with torch.no_grad():
        t_logits = predict(teacher, (xs,), batch=64)
    student = make_student_a(cfg, teacher, num_classes, seed)
    kd = DistillationLoss(temperature=cfg.temperature, alpha=cfg.alpha)
    opt = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=1e-4)
    ep = train_epochs(student, opt, (xs,), ys, kd, epochs, 64, seed=seed, teacher_logits=t_logits)
    return student, ep


# ------------------------------------------------------------------------------------------------
# validation search (``--select A`` / ``--select B``): settings are chosen here, never on the test split
# ------------------------------------------------------------------------------------------------


def select_lobes(b: Budget, grid: list[tuple[StudentA, int]], seeds: list[int], val_fraction: float = 0.25) -> list[dict]:
    """Split the task-A training patches (left hemisphere) into fit / validation, fine-tune the teacher on
    fit exactly as the benchmark does, then distil each (student config, epochs) of ``grid`` on fit and
    score it on validation. Test patches are not loaded into any model."""
    data = lobe_patches(b.n_train, b.n_test)
    x, y = data["train"]
    n_val = int(len(y) * val_fraction)
    xf, yf, xv, yv = x[n_val:], y[n_val:], x[:n_val], y[:n_val]
    C = len(LOBES)
    out = []
    for seed in seeds:
        torch.manual_seed(seed)
        teacher = create_backbone("tf_efficientnet_lite0", pretrained=True, num_classes=C, in_chans=1, drop_rate=0.2)
        opt = torch.optim.AdamW(teacher.parameters(), lr=1e-3, weight_decay=1e-4)
        train_epochs(teacher, opt, (xf,), yf, nn.CrossEntropyLoss(), b.img_epochs, 64, seed=seed)
        m_t = balanced_accuracy(predict(teacher, (xv,)), yv)
        log(f"select A seed {seed}: teacher val bal.acc {m_t:.3f}")
        for cfg, epochs in grid:
            t0 = time.perf_counter()
            student, _ = train_lobes_student(cfg, teacher, xf, yf, C, epochs, seed=seed)
            m = balanced_accuracy(predict(student, (xv,)), yv)
            n = sum(p.numel() for p in student.parameters())
            out.append({"seed": seed, "config": cfg, "epochs": epochs, "val": m, "teacher_val": m_t, "params": n})
            log(f"  {cfg} epochs={epochs}: val {m:.3f} ({100 * m / m_t:.1f}% of teacher), {n:,} params, {time.perf_counter() - t0:.0f} s")
    return out


SELECT_A_GRID = [  # T=4, α=0.7 (the previous session's) throughout: one CPU under load allowed no wider search
    (StudentA(init="random"), 8),  # the previous session's student
    (StudentA(init="imagenet"), 8),
    (StudentA(init="imagenet"), 4),
    (StudentA(init="teacher"), 8),
]


def int8_rows(task, model, lat_inputs, eval_inputs, y, metric_fn, m_ref, lat_ref, calib, b: Budget, tmp: Path) -> list[Row]:
    rows = []
    from core.compress import has_conv_layers

    # the method named, not "auto": on a CPU without int8 dot products "auto" keeps a Linear-only model fp32, and this
    # row measures the int8 path itself (the reason "auto" avoids it there)
    method, kind = ("pt2e", "PT2E static") if has_conv_layers(model) else ("torchao", "torchao dynamic")
    name = f"int8 {kind} + Inductor" if b.compile_int8 else f"int8 {kind} (not compiled: --quick)"
    try:
        t0 = time.perf_counter()
        q = quantize_int8(model, lat_inputs, calibration=calib, method=method, compile=b.compile_int8)
        lat_q = cpu_latency(q, lat_inputs, b.latency_repeats)  # first (warm-up) call compiles
        m_q = metric_fn(predict(q, eval_inputs), y)
        rows.append(Row(task, name, 0, sum(p.numel() for p in model.parameters()), None, m_q, None, lat_q,
                        note=f"quantize+compile {time.perf_counter() - t0:.0f} s"))
        log(f"  {name}: metric {m_q:.3f} (fp32 {m_ref:.3f}), latency ratio {lat_q / lat_ref:.2f}")
    except Exception as e:  # noqa: BLE001 - report, don't hide
        rows.append(Row(task, name, 0, 0, None, float("nan"), None, None, note=f"failed: {type(e).__name__}: {str(e)[:120]}"))
        log(f"  {name} failed: {e}")
    if b.onnx:
        try:
            p32 = export_onnx(model, lat_inputs, tmp / f"{task[0]}.onnx", check=True, atol=1e-3)
            p8 = quantize_onnx_int8(p32, tmp / f"{task[0]}.int8.onnx")
            r32, r8 = OnnxRunner(p32, threads=1), OnnxRunner(p8, threads=1)
            l32, l8 = cpu_latency(r32, lat_inputs, b.latency_repeats), cpu_latency(r8, lat_inputs, b.latency_repeats)
            m32, m8 = metric_fn(predict(r32, eval_inputs), y), metric_fn(predict(r8, eval_inputs), y)
            rows.append(Row(task, "ONNX Runtime fp32 (parity-checked)", 0, 0, None, m32, p32.stat().st_size, l32))
            rows.append(Row(task, "ONNX Runtime int8 (dynamic)", 0, 0, None, m8, p8.stat().st_size, l8,
                            note=f"{l32 / l8:.2f}× faster than ORT fp32"))
            log(f"  ONNX: fp32 {m32:.3f} lat x{l32 / lat_ref:.2f}; int8 {m8:.3f} lat x{l8 / lat_ref:.2f}")
        except Exception as e:  # noqa: BLE001
            rows.append(Row(task, "ONNX export / ORT int8", 0, 0, None, float("nan"), None, None, note=f"failed: {type(e).__name__}: {str(e)[:120]}"))
            log(f"  ONNX failed: {e}")
    return rows


# ------------------------------------------------------------------------------------------------
# task B: MovieLens genres from titles with MiniLM
# ------------------------------------------------------------------------------------------------


class BagOfTokensStudent(nn.Module):
    """Mean of token embeddings (init: PCA of the teacher's token embeddings) + a small MLP."""

    def __init__(self, teacher_embeddings: torch.Tensor, dim: int, num_classes: int):
        super().__init__()
        e = teacher_embeddings.detach().float()
        e = e - e.mean(0)
        _, _, v = torch.linalg.svd(e[:: max(1, len(e) // 8000)], full_matrices=False)
        self.emb = nn.Embedding.from_pretrained(e @ v[:dim].T, freeze=False)
        self.mlp = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 256), nn.GELU(), nn.Linear(256, num_classes))

    def forward(self, input_ids, attention_mask):
        m = attention_mask.unsqueeze(-1).float()
        return self.mlp((self.emb(input_ids) * m).sum(1) / m.sum(1).clamp_min(1))


# ------------------------------------------------------------------------------------------------
# task B LoRA (shared by the benchmark and the validation search, ``--select B``)
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoraB:
    targets: tuple[str, ...] | None = ("query", "value")  # None: every Linear of the encoder (q, k, v, o, both MLP layers)
    r: int = 8
    lr: float = 5e-4
    lr_ratio: float = 1.0  # LoRA+ (Hayou et al., 2024): the B matrices learn lr_ratio times faster than the A matrices
    epochs: int | None = None  # None: the budget's text_epochs (the full-FT reference's)

    @property
    def label(self) -> str:
        where = ", ".join(self.targets) if self.targets else "all linear layers"
        plus = f", LoRA+ ratio {self.lr_ratio:g}" if self.lr_ratio != 1 else ""
        return f"LoRA r={self.r} ({where}), lr {self.lr:g}{plus}"


LORA_B = LoraB(targets=None, r=8, lr=5e-4, epochs=9)  # chosen by choose_lora on 5-fold cross-validation x 2 repeats: python -m bench.finetune --select B-cv


def train_genres_lora(cfg: LoraB, model: nn.Module, X: tuple, y: torch.Tensor, epochs: int, loss_fn, bs: int, head_lr: float,
                      seed: int = 0, on_epoch=None) -> tuple[nn.Module, float]:
    """LoRA (alpha = 2r) on ``model``'s encoder + its full head, AdamW; returns (model, CPU s/epoch)."""
    lora = apply_lora(model, target_modules=list(cfg.targets) if cfg.targets else None, r=cfg.r, alpha=2 * cfg.r, exclude=["*pooler*"])
    named = [(n, p) for n, p in lora.named_parameters() if p.requires_grad and not n.startswith("head")]
    a = [p for n, p in named if "lora_B" not in n]
    bmat = [p for n, p in named if "lora_B" in n]
    opt = torch.optim.AdamW([{"params": a, "lr": cfg.lr}, {"params": bmat, "lr": cfg.lr * cfg.lr_ratio},
                             {"params": list(lora.head.parameters()), "lr": head_lr}])
    ep = train_epochs(lora, opt, X, y, loss_fn, epochs, bs, seed=seed, trim_mask=True, on_epoch=on_epoch)
    return lora, ep


GENRES_HEAD_LR = 3e-3  # the freshly initialised head learns at the same rate in every variant


def genres_data(b: Budget) -> dict:
    """Task B's items tokenised, with the benchmark's train / test split (seed-0 permutation, 20 % test)."""
    titles, y, _ = movielens_titles()
    perm = torch.randperm(len(titles), generator=torch.Generator().manual_seed(0))
    n_test = len(titles) // 5
    if b.n_train < 1000:  # --quick
        perm = perm[: b.n_train + b.n_test]
        n_test = b.n_test
    te, tr = perm[:n_test], perm[n_test:]
    C = y.shape[1]
    enc = create_backbone("minilm-l6-v2", num_classes=C).tokenizer(titles, padding="max_length", truncation=True, max_length=16,
                                                                   return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    return {"C": C, "ids": ids, "mask": mask, "tr": tr, "Xtr": (ids[tr], mask[tr]), "Xte": (ids[te], mask[te]), "ytr": y[tr], "yte": y[te]}


def genres_full_ft(b: Budget, d: dict, seed: int = 0) -> tuple[nn.Module, float, float, dict]:
    """Task B's full-FT reference trained with ``seed`` (init and batch order): (model, CPU s/epoch, test AUC, report)."""
    torch.manual_seed(seed)
    full = create_backbone("minilm-l6-v2", num_classes=d["C"])
    groups = discriminative_param_groups(full, lr=1e-4, decay=0.8, weight_decay=0.01)
    top = max(g["depth"] for g in groups)
    for grp in groups:
        if grp["depth"] == top:
            grp["lr"] = GENRES_HEAD_LR
    ep = train_epochs(full, torch.optim.AdamW(groups), d["Xtr"], d["ytr"], nn.BCEWithLogitsLoss(), b.text_epochs, 32, seed=seed, trim_mask=True)
    m = macro_auc(predict(full, d["Xte"]), d["yte"])
    rep = trainable_parameter_report(full)
    log(f"  full FT seed {seed}: macro-AUC {m:.3f}, {ep:.1f} s/epoch, trainable {rep['trainable']}")
    return full, ep, m, rep


def genres_seed_pairs(b: Budget, cfg: LoraB, lora_epochs: int, seeds: list[int], threads: int = 1,
                      d: dict | None = None) -> list[tuple[float, float]]:
    """(full-FT test AUC, LoRA test AUC) for each of ``seeds``, each pair trained with that seed; the target row's
    extra seeds, importable so that a second process can run some of them (``--seed-workers``). ``d``: task B's
    data (:func:`genres_data`) when the caller has it; a worker process tokenises its own."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(threads)
    d = genres_data(b) if d is None else d
    out = []
    for seed in seeds:
        m_f = genres_full_ft(b, d, seed)[2]
        torch.manual_seed(seed)
        lora, _ = train_genres_lora(cfg, create_backbone("minilm-l6-v2", num_classes=d["C"]), d["Xtr"], d["ytr"], lora_epochs,
                                    nn.BCEWithLogitsLoss(), 32, GENRES_HEAD_LR, seed=seed)
        m_l = macro_auc(predict(lora, d["Xte"]), d["yte"])
        log(f"  seed {seed}: LoRA {m_l:.3f} vs full FT {m_f:.3f} ({100 * m_l / m_f:.1f}%)")
        out.append((m_f, m_l))
        del lora
    return out


SEED_WORKERS = 0  # processes for task B's extra target-row seeds besides the task's own (set by --seed-workers)


def task_genres(b: Budget, tmp: Path) -> list[Row]:
    log("task B: MovieLens-100K titles -> genres")
    d = genres_data(b)
    C, ids, mask, tr = d["C"], d["ids"], d["mask"], d["tr"]
    Xtr, Xte, ytr, yte = d["Xtr"], d["Xte"], d["ytr"], d["yte"]
    bce = nn.BCEWithLogitsLoss()
    bs = 32
    rows: list[Row] = []
    head_lr = GENRES_HEAD_LR
    cfg = LORA_B
    lora_epochs = b.lora_epochs or cfg.epochs or b.text_epochs
    extra_seeds = list(b.lora_seeds[1:])
    pool = futures = None
    if SEED_WORKERS and len(extra_seeds) > 1:  # the later seeds' pairs in worker processes while this one runs the rest
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        from bench.finetune import genres_seed_pairs as importable  # spawn must import it

        mine, theirs = extra_seeds[:1], extra_seeds[1:]  # this process also runs the other rows: it keeps one seed
        chunks = [theirs[i::SEED_WORKERS] for i in range(SEED_WORKERS) if theirs[i::SEED_WORKERS]]
        pool = ProcessPoolExecutor(max_workers=len(chunks), mp_context=mp.get_context("spawn"))
        futures = [(c, pool.submit(importable, b, cfg, lora_epochs, c, torch.get_num_threads())) for c in chunks]
        extra_seeds = mine

    def make(seed=0):
        torch.manual_seed(seed)
        return create_backbone("minilm-l6-v2", num_classes=C)

    def run(name, model, opt, seed=0):
        ep = train_epochs(model, opt, Xtr, ytr, bce, b.text_epochs, bs, seed=seed, trim_mask=True)
        m = macro_auc(predict(model, Xte), yte)
        rep = trainable_parameter_report(model)
        log(f"  {name}: macro-AUC {m:.3f}, {ep:.1f} s/epoch, trainable {rep['trainable']}")
        return ep, m, rep

    full, ep_f, m_f, rep_f = genres_full_ft(b, d, 0)
    x_lat = (ids[:32], mask[:32])
    lat_f = cpu_latency(full, x_lat, b.latency_repeats)
    rows.append(Row("B genres", "full FT (layer-wise LRs 1e-4·0.8^k, head 3e-3)", rep_f["trainable"], rep_f["total"], ep_f, m_f, model_size_bytes(full), lat_f))

    lora, ep_l = train_genres_lora(cfg, make(), Xtr, ytr, lora_epochs, bce, bs, head_lr)
    m_l = macro_auc(predict(lora, Xte), yte)
    rep_l = trainable_parameter_report(lora)
    log(f"  {cfg.label}: macro-AUC {m_l:.3f}, {ep_l:.1f} s/epoch, trainable {rep_l['trainable']}")
    ad = save_adapter(lora, tmp / "genres_lora.safetensors")
    merge_lora(lora)
    # the target row over more seeds (head and LoRA init, batch order), each against the full FT trained with its seed
    pairs = dict(zip(extra_seeds, genres_seed_pairs(b, cfg, lora_epochs, extra_seeds, torch.get_num_threads(), d)))
    if pool is not None:
        for c, f in futures:
            pairs.update(zip(c, f.result()))
        pool.shutdown()
    seeds = [m_l] + [pairs[s][1] for s in b.lora_seeds[1:]]
    ref_seeds = [m_f] + [pairs[s][0] for s in b.lora_seeds[1:]]
    rows.append(Row("B genres", f"{cfg.label}, {lora_epochs} epochs, merged", rep_l["trainable"], rep_l["base_total"], ep_l, m_l, ad.stat().st_size,
                    cpu_latency(lora, x_lat, b.latency_repeats), note="adapter file size (LoRA + head); latency after merge",
                    extra={"seeds": seeds, "ref_seeds": ref_seeds}))
    del lora

    bit = apply_bitfit(make())
    ep_b, m_b, rep_b = run("BitFit", bit, torch.optim.AdamW([p for p in bit.parameters() if p.requires_grad], lr=3e-3))
    rows.append(Row("B genres", "BitFit (biases + head)", rep_b["trainable"], rep_b["total"], ep_b, m_b,
                    save_adapter(bit, tmp / "genres_bitfit.safetensors").stat().st_size, None))
    del bit

    rows += int8_rows("B genres", full, x_lat, Xte, yte, macro_auc, m_f, lat_f, [(ids[tr[i : i + 32]], mask[tr[i : i + 32]]) for i in range(0, min(128, len(tr) - 31), 32)], b, tmp)

    with torch.no_grad():
        t_logits = predict(full, Xtr)
    student = BagOfTokensStudent(full.encoder.get_input_embeddings().weight, 96, C)
    kd = DistillationLoss(temperature=2.0, alpha=0.7, multilabel=True)
    opt = torch.optim.AdamW(student.parameters(), lr=3e-3, weight_decay=1e-4)
    ep_s = train_epochs(student, opt, Xtr, ytr, kd, b.student_epochs, bs, teacher_logits=t_logits, trim_mask=True)
    m_s = macro_auc(predict(student, Xte), yte)
    rep_s = trainable_parameter_report(student)
    rows.append(Row("B genres", "distilled student (bag of tokens, d=96)", rep_s["trainable"], rep_s["total"], ep_s, m_s, model_size_bytes(student),
                    cpu_latency(student, x_lat, b.latency_repeats), note=f"{rep_f['total'] / rep_s['total']:.1f}× fewer params; {b.student_epochs} epochs",
                    extra={"teacher": m_f}))
    log(f"  student: macro-AUC {m_s:.3f} vs teacher {m_f:.3f}")
    return rows


def cv_units(n: int, units: list[tuple[int, int]], k: int = 5) -> list[tuple[int, int, int, np.ndarray, np.ndarray]]:
    """Repeated k-fold cross-validation over ``n`` training items: for each (repeat, fold) of ``units`` the
    validation and fit positions and the unit's seed (``k * repeat + fold``). Repeat 0 keeps the items' order
    (its fold 0 is the single split of ``--select B``); repeat ``r`` > 0 re-permutes them with generator seed ``r``."""
    out = []
    for rep, fold in units:
        order = np.arange(n) if rep == 0 else torch.randperm(n, generator=torch.Generator().manual_seed(rep)).numpy()
        lo, hi = fold * n // k, (fold + 1) * n // k
        out.append((rep, fold, k * rep + fold, order[lo:hi], np.concatenate([order[:lo], order[hi:]])))
    return out


def select_genres(b: Budget, grid: list[tuple[LoraB, int]], seeds: list[int], val_fraction: float = 0.2,
                  units: list[tuple[int, int]] | None = None, out_path: Path | None = None) -> list[dict]:
    """Split the task-B training items into fit / validation, fine-tune fully on fit exactly as the
    benchmark does (the reference), then train each (LoRA config, max epochs) of ``grid`` on fit; every model
    is scored on validation after every epoch (constant learning rates, so "e epochs" is the first e epochs
    of the same run, which the benchmark reproduces with the same seed). The test items are not used.
    The reference is trained for the grid's largest epoch count and its records have ``config`` "full FT".
    Without ``units``: one split (the first ``val_fraction`` of the training items), each of ``seeds``; with
    ``units`` ((repeat, fold) pairs): 5-fold cross-validation units of :func:`cv_units`, records tagged with
    ``repeat`` / ``fold``. ``out_path``: every record is also written there (JSON) as soon as it exists."""
    import json

    titles, y, _ = movielens_titles()
    perm = torch.randperm(len(titles), generator=torch.Generator().manual_seed(0))
    tr = perm[len(titles) // 5 :]  # the benchmark's training items (its test items are perm[:n // 5])
    if b.n_train < 1000:  # --quick
        tr = tr[: b.n_train]
    if units is None:
        n_val = int(len(tr) * val_fraction)
        plan = [(0, 0, seed, np.arange(n_val), np.arange(n_val, len(tr))) for seed in seeds]
    else:
        plan = cv_units(len(tr), units)
    C = y.shape[1]
    tok = create_backbone("minilm-l6-v2", num_classes=C).tokenizer
    enc = tok(titles, padding="max_length", truncation=True, max_length=16, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    bce, bs, head_lr = nn.BCEWithLogitsLoss(), 32, 3e-3
    max_ref = max(e for _, e in grid)
    out = []

    for rep, fold, seed, v_pos, f_pos in plan:
        va, fi = tr[torch.from_numpy(v_pos)], tr[torch.from_numpy(f_pos)]
        Xf, Xv, yf, yv = (ids[fi], mask[fi]), (ids[va], mask[va]), y[fi], y[va]
        tag = f"repeat {rep} fold {fold} seed {seed}" if units is not None else f"seed {seed}"

        def recorder(model, label, params, fraction, Xv=Xv, yv=yv, rep=rep, fold=fold, seed=seed, tag=tag):
            def on_epoch(e):
                m = macro_auc(predict(model, Xv), yv)
                rec = {"seed": seed, "config": label, "epochs": e, "val": m, "params": params, "fraction": fraction}
                out.append(rec if units is None else {**rec, "repeat": rep, "fold": fold})
                if out_path is not None:
                    Path(out_path).write_text(json.dumps(out, indent=0))
                log(f"  {tag} {label} epoch {e}: val macro-AUC {m:.4f}")
            return on_epoch

        torch.manual_seed(seed)
        full = create_backbone("minilm-l6-v2", num_classes=C)
        groups = discriminative_param_groups(full, lr=1e-4, decay=0.8, weight_decay=0.01)
        top = max(g["depth"] for g in groups)
        for grp in groups:
            if grp["depth"] == top:
                grp["lr"] = head_lr
        n_full = sum(p.numel() for p in full.parameters())
        t0 = time.perf_counter()
        train_epochs(full, torch.optim.AdamW(groups), Xf, yf, bce, max_ref, bs, seed=seed, trim_mask=True,
                     on_epoch=recorder(full, "full FT", n_full, 1.0))
        log(f"  {tag} full FT: {time.perf_counter() - t0:.0f} s")
        del full
        for cfg, epochs in grid:
            t0 = time.perf_counter()
            torch.manual_seed(seed)
            model = create_backbone("minilm-l6-v2", num_classes=C)
            holder: dict = {}

            def on_epoch(e, holder=holder, cfg=cfg, recorder=recorder):
                lora = holder["model"]
                rep_ = trainable_parameter_report(lora)
                recorder(lora, cfg.label, rep_["trainable"], rep_["trainable"] / rep_["base_total"])(e)

            # apply_lora modifies the model in place, so the callback can reach it through the same object
            holder["model"] = model
            train_genres_lora(cfg, model, Xf, yf, epochs, bce, bs, head_lr, seed=seed, on_epoch=on_epoch)
            log(f"  {tag} {cfg.label}: {time.perf_counter() - t0:.0f} s")
            del model
    return out


def _unit(r: dict) -> tuple:
    """A validation record's unit: (repeat, fold, seed); single-split records are repeat 0, fold 0."""
    return (r.get("repeat", 0), r.get("fold", 0), r["seed"])


def choose_lora(res: list[dict], tolerance: float = 0.003) -> dict:
    """The adoption rule of ``--select B`` (fixed before the search was run): the reference's epoch count is the
    one with the highest mean full-FT validation AUC (ties: fewer); each LoRA (setting, epochs) is scored by
    the mean over seeds (cross-validation: units) of its validation AUC / the reference's (same seed or unit,
    reference epochs); the best score
    wins, unless a candidate within ``tolerance`` of it has fewer trainable parameters (then fewer epochs)."""
    ref = [r for r in res if r["config"] == "full FT"]
    ref_mean = {e: np.mean([r["val"] for r in ref if r["epochs"] == e]) for e in sorted({r["epochs"] for r in ref})}
    e_ref = max(ref_mean, key=lambda e: (ref_mean[e], -e))
    ref_val = {_unit(r): r["val"] for r in ref if r["epochs"] == e_ref}
    cands = []
    for key in dict.fromkeys((r["config"], r["epochs"]) for r in res if r["config"] != "full FT"):
        rs = [r for r in res if (r["config"], r["epochs"]) == key and r["fraction"] <= 0.05]
        if rs:
            ratios = [r["val"] / ref_val[_unit(r)] for r in rs]
            cands.append({"config": key[0], "epochs": key[1], "score": float(np.mean(ratios)), "params": rs[0]["params"]})
    best = max(c["score"] for c in cands)
    near = [c for c in cands if c["score"] >= best - tolerance]
    pick = min(near, key=lambda c: (c["params"], c["epochs"], -c["score"]))
    return {"reference_epochs": e_ref, **pick}


SELECT_B_GRID = [  # all linear layers, alpha = 2r, the head trained fully; each up to 6 epochs (scored after every epoch)
    (LoraB(targets=None, r=8, lr=5e-4), 6),  # last session's setting (there: 3 epochs)
    (LoraB(targets=None, r=8, lr=2e-3), 6),
    (LoraB(targets=None, r=16, lr=2e-3), 6),
]


# ------------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------------


def render(rows: list[Row], b: Budget, quick: bool, seconds: float) -> str:
    out_rows = []
    verdicts: list[str] = []
    for task in dict.fromkeys(r.task for r in rows):
        rs = [r for r in rows if r.task == task]
        ref = rs[0]
        for r in rs:
            out_rows.append({
                "task": r.task,
                "variant": r.variant,
                "trainable params": f"{r.trainable:,} ({100 * r.trainable / max(r.total, 1):.2f}%)" if r.trainable else "–",
                "time/epoch vs full FT": f"{r.epoch_s / ref.epoch_s:.2f}" if r.epoch_s else "–",
                "metric": f"{r.metric:.3f}" if r.metric == r.metric else "n/a",
                "metric vs full FT": f"{100 * r.metric / ref.metric:.1f}%" if r.metric == r.metric else "n/a",
                "model / adapter size": _mb(r.size_bytes),
                "CPU latency vs fp32": f"{r.latency_s / ref.latency_s:.2f}" if r.latency_s else "–",
                "note": r.note,
            })
        verdicts += targets(task, rs)
    metric_names = "A: balanced accuracy over 6 lobes (test = right hemisphere); B: macro ROC-AUC over genres (20% held-out items)"
    head = (
        f"## Fine-tuning toolkit on real tasks (`python -m bench.finetune{' --quick' if quick else ''}`)\n\n"
        f"{machine_line()}; whole run {seconds / 60:.1f} min. Time/epoch and latency are ratios to the full-FT fp32 model of the same task, "
        f"measured in this run as CPU time of one thread (the machine is shared; wall time would mostly measure the neighbours). "
        f"Latency: batch of 32, median of {b.latency_repeats}. Metrics — {metric_names}.\n"
        f"Data: A = Colin27 T1 + AAL atlas (one real subject, mricron-data; {b.n_train} train / {b.n_test} test 64×64 patches, "
        f"{b.img_epochs} epochs); B = MovieLens-100K item titles (recbole files; research, non-commercial licence), {b.text_epochs} epochs.\n"
    )
    if quick:
        head += "\n**Quick smoke run: tiny data, one epoch, int8 not compiled — numbers are not meaningful.**\n"
    return head + "\n" + markdown_table(out_rows) + "\n\n### Targets\n" + "\n".join(f"- {v}" for v in verdicts) + "\n" + NOTES


NOTES = """
### Notes
- int8 rows compare a compiled int8 model with the eager fp32 model (what the target asks). Part of the gain is
  the compiler, not int8: the parity-checked ONNX Runtime fp32 row is the graph-optimised fp32 reference.
- ONNX Runtime *dynamic* int8 quantizes convolutions to `ConvInteger`, which has no fast fused CPU kernel:
  slower than ORT fp32 on the CNN (task A), faster on the transformer (task B; the ratio is under Targets). For CNNs use the PT2E row.
- On a CPU without int8 dot-product instructions (AVX512-VNNI, AVX-VNNI, AMX-INT8 — e.g. an AVX2-only AMD EPYC) torchao's
  dynamic int8 runs `torch._int_mm` without a fast kernel: its row is many times *slower* than fp32 there. This
  benchmark asks for that method by name; `core.compress.quantize_int8(method="auto")` keeps such a model fp32 on that
  CPU (`python bench/int8_cpu.py` compares every candidate); use the ONNX Runtime int8 row for transformers there.
- Task A's student keeps the first 5 of the fine-tuned teacher's 7 EfficientNet-Lite0 stages (layer-dropping
  distillation, as DistilBERT; 4.8× fewer parameters) with a new 112→6 head, and learns from the teacher's logits
  (T = 4, α = 0.7) on the same 512 patches for 8 epochs. Chosen on validation (`python -m bench.finetune --select A`:
  128 of the 512 left-hemisphere training patches held out, the teacher re-trained on the other 384; seed 0):
  previous MobileNetV3-S-0.5 from random init 51.4 % of the teacher, ImageNet stages 1–5 106.1 % (8 epochs) /
  94.7 % (4 epochs), teacher stages 1–5 107.1 %. Validation patches lie next to training patches (same hemisphere),
  so validation ratios are optimistic; the test ratio is across hemispheres. Task B's student starts from a PCA of
  the teacher's token embeddings.
- Task B's LoRA adapts every linear layer of MiniLM (q, k, v, attention output and both MLP layers; r = 8, α = 16,
  lr 5e-4, the head trained fully at lr 3e-3) for 9 epochs; the full-FT reference trains 7. Both chosen on the
  training items only by repeated 5-fold cross-validation (`--select B-cv`, session 5: 2 repeats × 5 folds = 10
  units, each fitted on 4 folds, scored on the 5th after every epoch, its own seed; the test items never loaded) with
  the rule fixed before the search (`choose_lora`: the reference's epochs = its best mean validation epoch count;
  then the best mean over units of LoRA / full-FT of the same unit; within 0.3 points fewer parameters, then fewer
  epochs win). Candidates r = 8 / 16 / 24 at lr 5e-4 (1.49 / 2.95 / 4.41 % of the parameters; r = 32 on every linear
  layer would be 5.87 %), 1–10 epochs. Full FT: 0.564 / 0.638 / 0.662 / 0.685 / 0.703 / 0.711 / 0.715 / 0.715 /
  0.714 / 0.714 mean validation AUC after 1–10 epochs → 7. LoRA (mean ± sd over the 10 units): r = 8 98.9 % ± 1.8
  (6 epochs), 100.1 ± 2.1 (7), 100.7 ± 1.8 (8), 101.0 ± 1.8 (9), 101.3 ± 1.8 (10); r = 16 at best 99.8 ± 3.1 (9);
  r = 24 at best 98.2 ± 4.3 (9) — at this lr and α = 2r the larger ranks learn more slowly and vary more → r = 8,
  9 epochs (within 0.3 points of 10). Earlier searches used one 269-item split (`--select B`, `--select B-longer`,
  seeds 0–2; lr 2e-3 diverged at r = 8 and 16; they chose 6 / 6 and then 7 / 7 epochs).
- Task B's LoRA target is **met** on the test items: 100.2 % ± 1.7 % of full FT over seeds 0–4 (per seed 98.8 /
  100.4 / 101.7 / 98.1 / 102.0 %), each seed's LoRA against the full FT trained with the same seed (full FT 0.685 /
  0.682 / 0.666 / 0.689 / 0.672, LoRA 0.676 / 0.685 / 0.677 / 0.677 / 0.686). Against the seed-0 full FT alone (how
  the row was scored before this session) 99.3 % ± 0.7 %. Disclosure: the test items had been scored before for
  r = 8 configurations — 3 epochs (94.7 %), 6 / 6 (97.2 % ± 1.2 %) and 7 / 7 (97.6 % ± 1.7 %, seeds 0–2 against
  the seed-0 full FT) — so this is not the first look at them; the 9-epoch choice came from the cross-validation
  above, protocol and rule written down before it ran, and the test items were scored once under it. The margin is
  small (the lowest seed 98.1 %; sd 1.7 points over 5 seeds). The adapter file holds the LoRA matrices and the head.
- Task B's student (not an issue target) learns from the full-FT model, which now trains 7 epochs (0.685 on the test
  items; 0.649 at 3): the student's AUC barely moves (0.632, was 0.638) but is 92.4 % of the stronger teacher
  (98.3 % of the 3-epoch one), so its ≥ 95 % line reads missed.
- Task A's student runs its 5 stages at the teacher's resolution, where most of the FLOPs are: 0.69 of a teacher
  epoch and 0.85 of its latency, so it is smaller (4.8×) but not much faster; the whole run takes longer than
  with the old student.
- Task A is one subject (Colin27), so the metric measures generalisation across hemispheres, not subjects.
  Task B predicts genres from a title and year only: a weak signal, so absolute AUCs are modest.
"""


def _over_seeds(ratios: np.ndarray, same_seed_ref: bool = False) -> str:
    if len(ratios) < 2:
        return ""
    return (f", mean ± sd over {len(ratios)} seeds {100 * ratios.mean():.1f}% ± {100 * ratios.std(ddof=1):.1f}% "
            f"(seed 0 in the table; per seed {', '.join(f'{100 * r:.1f}%' for r in ratios)}"
            + ("; each seed against the full FT trained with the same seed)" if same_seed_ref else ")"))


def targets(task: str, rs: list[Row]) -> list[str]:
    ref = rs[0]
    out = []
    by = {r.variant.split(" ")[0] + ("" if "ONNX" not in r.variant else "-onnx"): r for r in rs}
    lora = next((r for r in rs if r.variant.startswith("LoRA")), None)
    if lora:
        frac = lora.trainable / max(lora.total, 1)
        keep = lora.metric / ref.metric
        ok = frac <= 0.05 and keep >= 0.98
        refs = lora.extra.get("ref_seeds")  # the full FT of each seed (else every seed against the table's reference)
        seeds = np.array(lora.extra.get("seeds") or [lora.metric]) / (np.array(refs) if refs else ref.metric)
        if len(seeds) > 1:  # the verdict is on the mean over seeds
            keep, ok = float(seeds.mean()), frac <= 0.05 and seeds.mean() >= 0.98
        out.append(f"{task} LoRA: {100 * frac:.2f}% of parameters trained (target ≤ 5%), {100 * keep:.1f}% of full-FT metric (target ≥ 98%)"
                   + _over_seeds(seeds, bool(refs)) + " — " + ("**met**" if ok else "**missed**"))
    q = next((r for r in rs if r.variant.startswith("int8 ")), None)
    if q and q.latency_s and q.metric == q.metric:
        speed = ref.latency_s / q.latency_s
        loss = (ref.metric - q.metric) / ref.metric
        ok = speed >= 1.5 and loss <= 0.01
        out.append(f"{task} {q.variant}: {speed:.2f}× faster than fp32 eager (target ≥ 1.5×), metric change {-100 * loss:+.2f}% (target ≥ −1%) — "
                   + ("**met**" if ok else "**missed**" + (" (not compiled in --quick)" if "not compiled" in q.variant else "")))
    o = next((r for r in rs if r.variant.startswith("ONNX Runtime int8")), None)
    o32 = next((r for r in rs if r.variant.startswith("ONNX Runtime fp32")), None)
    if o and o32 and o.latency_s:
        out.append(f"{task} ONNX Runtime int8: {o32.latency_s / o.latency_s:.2f}× faster than ORT fp32, {ref.latency_s / o.latency_s:.2f}× faster than torch fp32; "
                   f"metric change {100 * (o.metric - ref.metric) / ref.metric:+.2f}%")
    s = next((r for r in rs if r.variant.startswith("distilled")), None)
    if s:
        ratio = ref.total / max(s.total, 1)
        keep = s.metric / s.extra["teacher"]
        ok = ratio >= 4 and keep >= 0.95
        seeds = np.array(s.extra.get("seeds") or [s.metric]) / s.extra["teacher"]
        if len(seeds) > 1:
            keep, ok = float(seeds.mean()), ratio >= 4 and seeds.mean() >= 0.95
        out.append(f"{task} distilled student: {ratio:.1f}× fewer parameters (target ≥ 4×), {100 * keep:.1f}% of teacher metric (target ≥ 95%)"
                   + _over_seeds(seeds) + " — " + ("**met**" if ok else "**missed**"))
    rnd = next((r for r in rs if "random init" in r.variant), None)
    if rnd:
        ok = ref.metric > rnd.metric
        out.append(f"{task} pretrained (ImageNet) {ref.metric:.3f} vs random init {rnd.metric:.3f} at equal steps — " + ("**met**" if ok else "**missed**"))
    del by
    return out


TASKS = {"A": task_lobes, "B": task_genres}


def selection_table(res: list[dict]) -> str:
    """Mean ± sd over seeds of each searched setting's validation metric and its ratio to the reference
    (``teacher_val`` of each record; task B: the full-FT reference at the epochs ``choose_lora`` picked)."""
    rows = []
    for key in dict.fromkeys((str(r["config"]), r["epochs"]) for r in res):
        rs = [r for r in res if (str(r["config"]), r["epochs"]) == key]
        v = np.array([r["val"] for r in rs])
        ratio = np.array([r["val"] / r["teacher_val"] for r in rs])
        rows.append({"setting": key[0], "epochs": key[1], "params": f"{rs[0]['params']:,}", "runs": len(rs),
                     "val metric": f"{v.mean():.3f} ± {v.std(ddof=1) if len(v) > 1 else 0:.3f}",
                     "vs reference": f"{100 * ratio.mean():.1f}% ± {100 * (ratio.std(ddof=1) if len(v) > 1 else 0):.1f}"})
    return markdown_table(rows)


SELECT_B_LONGER = [(LoraB(targets=None, r=8, lr=5e-4), 10)]  # the follow-up: does a longer budget (both models 10 epochs) reach 98 %?
# session 5: ranks at the lr that worked, scored by repeated 5-fold cross-validation over the training items (one 269-item
# split was ~3-4 points optimistic/noisy); r = 24 is the largest all-linear rank under 5 % of the parameters (r = 32: 5.87 %)
SELECT_B_CV_GRID = [(LoraB(targets=None, r=r, lr=5e-4), 10) for r in (8, 16, 24)]
SELECT_B_CV_UNITS = [(rep, fold) for rep in (0, 1) for fold in range(5)]  # (repeat, fold); seed = 5 * repeat + fold
SELECT = {"A": lambda b, seeds, **kw: select_lobes(b, SELECT_A_GRID, seeds),
          "B": lambda b, seeds, **kw: select_genres(b, SELECT_B_GRID, seeds, **kw),
          "B-longer": lambda b, seeds, **kw: select_genres(b, SELECT_B_LONGER, seeds, **kw),
          "B-cv": lambda b, seeds, units=None, **kw: select_genres(b, SELECT_B_CV_GRID, seeds, units=units or SELECT_B_CV_UNITS, **kw)}


def run_task(task: str, b: Budget, threads: int = 1, cache_dir: str | None = None, seed_workers: int = 0) -> list[dict]:
    """Run one task in this process; rows as plain dicts (picklable across processes). With ``cache_dir``
    the rows are also saved as ``<cache_dir>/<task>.json`` (with the time, the budget and the minutes taken),
    so a later invocation can render them with ``--reuse`` instead of measuring the task again."""
    import dataclasses
    import json

    global SEED_WORKERS
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(threads)
    SEED_WORKERS = seed_workers
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        rows = [dataclasses.asdict(r) for r in TASKS[task](b, Path(d))]
    if cache_dir:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        (Path(cache_dir) / f"{task}.json").write_text(json.dumps(
            {"task": task, "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "minutes": (time.perf_counter() - t0) / 60,
             "budget": dataclasses.asdict(b), "rows": rows}, default=str, indent=1))
    return rows


def load_cached(task: str, cache_dir: str, b: Budget) -> tuple[list[dict], dict]:
    """Rows of ``task`` saved by an earlier full run (``run_task(cache_dir=...)``); refuses a cache measured
    with another budget (e.g. --quick) in the fields the task reads (:data:`BUDGET_FIELDS`)."""
    import dataclasses
    import json

    path = Path(cache_dir) / f"{task}.json"
    if not path.is_file():
        raise SystemExit(f"--reuse {task}: no cached rows at {path} (run `python -m bench.finetune --tasks {task}` first)")
    d = json.loads(path.read_text())
    want = json.loads(json.dumps(dataclasses.asdict(b), default=str))
    have = {k: d["budget"].get(k) for k in BUDGET_FIELDS[task]}
    want = {k: want[k] for k in BUDGET_FIELDS[task]}
    if have != want:
        raise SystemExit(f"--reuse {task}: {path} was measured with another budget ({have} vs {want})")
    return d["rows"], d


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run on tiny data (numbers not meaningful)")
    ap.add_argument("--write", action="store_true", help="with --quick: still write BENCHMARKS.md (the full run always writes)")
    ap.add_argument("--benchmarks", type=Path, default=None, help="BENCHMARKS.md to write (default: the repo's)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1, see note in main)")
    ap.add_argument("--serial", action="store_true", help="run the tasks one after the other instead of in parallel processes")
    ap.add_argument("--seed-workers", type=int, default=0,
                    help="extra processes for task B's target-row seeds 2.. (each a full FT + LoRA pair); e.g. 1 with --tasks B --reuse A "
                         "keeps the run at two processes")
    ap.add_argument("--tasks", default="A,B", help="comma list of tasks to run: A (brain lobes), B (MovieLens genres)")
    ap.add_argument("--select", choices=sorted(SELECT), default=None,
                    help="instead of the benchmark: the validation search that chose the task's student (A) / LoRA (B) settings")
    ap.add_argument("--cache-dir", default=str(REPO / "runs" / "bench" / "finetune"),
                    help="every full task run saves its rows here (<task>.json) for --reuse")
    ap.add_argument("--reuse", default="", help="comma list of tasks whose rows come from --cache-dir (measured by an earlier full run "
                    "with the same budget) instead of being measured again — on a shared machine the two tasks can then run at different times")
    ap.add_argument("--no-write", action="store_true", help="print the section, leave BENCHMARKS.md alone")
    ap.add_argument("--units", default=None,
                    help="with --select B-cv: comma list of cross-validation units repeat.fold (default all: 0.0-0.4,1.0-1.4); "
                         "with --select-from: only these units' records count")
    ap.add_argument("--select-out", type=Path, default=None, help="with --select B*: write every validation record here (JSON) as it is made")
    ap.add_argument("--select-from", default=None,
                    help="with --select B*: comma list of JSON files of --select-out; apply the rule to their records instead of training")
    ap.add_argument("--seeds", default=None,
                    help="comma list of seeds: with --select the seeds searched (default 0); otherwise the seeds of the target rows "
                         "(default 0,1,2 for task A's student and 0-4 for task B's LoRA; the other rows use seed 0)")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # one thread: on a shared 2-core machine two OpenMP threads spin against other jobs and run 3-5x slower;
    # every figure is a ratio inside this run, so the choice does not bias comparisons
    torch.set_num_threads(args.threads)
    b = QUICK if args.quick else Budget()
    seeds = [int(v) for v in args.seeds.split(",")] if args.seeds else None
    t0 = time.perf_counter()
    if args.select:
        units = [tuple(int(v) for v in u.split(".")) for u in args.units.split(",")] if args.units else None
        if args.select_from:
            if not args.select.startswith("B"):
                ap.error("--select-from is for the task-B searches")
            import json

            res = [r for f in args.select_from.split(",") for r in json.loads(Path(f).read_text())]
            if units:
                res = [r for r in res if (r.get("repeat", 0), r.get("fold", 0)) in units]
        elif args.select.startswith("B"):
            res = SELECT[args.select](b, seeds or [0], units=units, out_path=args.select_out)
        else:
            res = SELECT[args.select](b, seeds or [0])
        if args.select.startswith("B"):
            pick = choose_lora(res)
            ref_val = {_unit(r): r["val"] for r in res if r["config"] == "full FT" and r["epochs"] == pick["reference_epochs"]}
            res = [{**r, "teacher_val": ref_val[_unit(r)]} for r in res]
        print(selection_table(res))
        if args.select.startswith("B"):
            print(f"adopted (rule in choose_lora): full FT {pick['reference_epochs']} epochs; {pick['config']}, {pick['epochs']} epochs, "
                  f"validation {100 * pick['score']:.1f}% of full FT")
        log(f"search took {(time.perf_counter() - t0) / 60:.1f} min")
        return 0
    if seeds and not args.quick:
        import dataclasses

        b = dataclasses.replace(b, seeds=tuple(seeds), lora_seeds=tuple(seeds))
    reuse = [t.strip().upper() for t in args.reuse.split(",") if t.strip()]
    tasks = [t.strip().upper() for t in args.tasks.split(",") if t.strip() and t.strip().upper() not in reuse]
    unknown = set(tasks + reuse) - set(TASKS)
    if unknown:
        ap.error(f"unknown task(s) {sorted(unknown)}; choose from {sorted(TASKS)}")
    cache_dir = str(Path(args.cache_dir) / "quick") if args.quick else args.cache_dir
    cached = {t: load_cached(t, cache_dir, b) for t in reuse}
    rows: list[Row] = []
    if len(tasks) > 1 and not args.serial:
        # the tasks are independent and every ratio is taken inside one task, so they run side by side,
        # one process (and one thread) each
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=len(tasks), mp_context=mp.get_context("spawn")) as pool:
            from bench.finetune import run_task as importable_run_task  # not __main__.run_task: spawn must import it

            futures = [pool.submit(importable_run_task, t, b, args.threads, cache_dir, args.seed_workers) for t in tasks]
            for f in futures:
                rows += [Row(**r) for r in f.result()]
    else:
        for t in tasks:
            rows += [Row(**r) for r in run_task(t, b, args.threads, cache_dir, args.seed_workers)]
    for t in TASKS:  # task order A, B in the table
        if t in cached:
            rows += [Row(**r) for r in cached[t][0]]
    rows.sort(key=lambda r: list(TASKS).index(r.task.split(" ")[0]))
    seconds = time.perf_counter() - t0 + sum(60 * c[1]["minutes"] for c in cached.values())
    md = render(rows, b, args.quick, seconds)
    if cached:
        done = "; ".join(f"task {t} measured {c[1]['measured']} ({c[1]['minutes']:.1f} min)" for t, c in cached.items())
        md = md.replace("\n\n| task |", f"\nTasks measured in separate invocations with the same budget (`--reuse`): {done}; the others in this one. "
                        "Every ratio is inside one task.\n\n| task |", 1)
    print(md)
    if args.no_write:
        return 0
    if not args.quick or args.write:
        kw = {"path": args.benchmarks} if args.benchmarks else {}
        key = write_benchmark_section("finetune", md, per_cpu=True, **kw)
        log(f"wrote section '{key}' of {args.benchmarks or 'BENCHMARKS.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
