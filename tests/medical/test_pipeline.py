"""The pipeline end to end on the real volumes with a tiny network: train (best checkpoint, early
stopping bookkeeping, resume), evaluate, infer (exact geometry, mL, PNG), score a folder with bad
cases, the dashboard api, DICOM privacy, and the MONAI bundle run back by monai.bundle."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest


from core.config import parse_config


def test_hd95_matches_monai_definition():
    import torch
    from monai.metrics import compute_hausdorff_distance
    from scipy import ndimage

    from domains.medical.metrics import hd95_per_class

    rng = np.random.default_rng(0)
    a = np.zeros((40, 50, 30), np.uint8)
    a[10:30, 10:40, 5:25] = 1
    a[15:20, 15:20, 10:15] = 2
    b = np.roll(a, 3, axis=1)
    b[ndimage.binary_dilation(b == 1, iterations=1) & (rng.random(b.shape) < 0.3)] = 1
    ours = hd95_per_class(b, a, ["bg", "x", "y"], (1.0, 2.0, 0.5))
    oh = lambda m: torch.nn.functional.one_hot(torch.as_tensor(m, dtype=torch.long), 3).permute(3, 0, 1, 2)[None]  # noqa: E731
    ref = compute_hausdorff_distance(oh(b), oh(a), include_background=False, percentile=95, spacing=[1.0, 2.0, 0.5])[0]
    np.testing.assert_allclose([ours["x"], ours["y"]], ref.numpy(), rtol=1e-5)


def test_tiny_run_writes_best_checkpoint_metrics_and_test_dice(tiny_run):
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert (tiny_run / "best.safetensors").is_file() and list((tiny_run / "checkpoints").glob("step_*.pt"))
    assert metrics["steps"] == 6
    assert 0.0 <= metrics["test_mean_dice"] <= 1.0
    for c in ("cerebrum_left", "cerebrum_right", "cerebellum", "deep_grey_nuclei"):
        assert f"test_dice/{c}" in metrics and f"test_hd95/{c}" in metrics
    rows = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    vals = [r["val_mean_dice"] for r in rows if "val_mean_dice" in r]
    assert len(vals) == 2 and metrics["best_val_mean_dice"] == pytest.approx(max(vals))
    ev = json.loads((tiny_run / "test_evaluation.json").read_text())
    assert ev["cases"][0]["case"] == "mni152"  # evaluated on the held-out image, never trained on


def test_resume_continues_from_last_checkpoint(tiny_run, tmp_path, tiny_args):
    from domains.medical.config import TrainConfig
    from domains.medical.train import train

    runs = tmp_path / "runs"
    shutil.copytree(tiny_run, runs / "medical" / "tiny", symlinks=True)
    args = [a if a != "2" or i == 0 or tiny_args[i - 1] != "--max-epochs" else "3" for i, a in enumerate(tiny_args)]
    cfg = parse_config(TrainConfig, ["--runs-dir", str(runs), "--name", "tiny", "--resume", "--no-track", "--no-evaluate-test", *args])
    out = train(cfg)
    assert out == runs / "medical" / "tiny"
    assert json.loads((out / "metrics.json").read_text())["steps"] == 9  # 6 restored + 3 new, not 9 from scratch
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [3, 3, 6, 6, 9, 9]  # (loss row + validation row) per epoch; epochs 1-2 were not re-run


def test_infer_cli_keeps_input_geometry_and_reports_ml(tiny_run, brain_task, tmp_path, capsys):
    from domains.medical.infer import main

    # an oblique, non-RAS copy of the held-out volume: the mask must come back on exactly that grid
    src = nib.load(str(brain_task / "imagesTs" / "mni152.nii.gz"))
    data = np.asarray(src.dataobj)[::-1, :, ::2][20:180, 20:210, 10:90].astype(np.float32)
    aff = src.affine @ np.array([[-1, 0, 0, 196], [0, 1, 0, 0], [0, 0, 2, 0], [0, 0, 0, 1]], float)
    aff[:3, 3] += aff[:3, :3] @ np.array([20, 20, 10])
    th = 0.1
    rot = np.array([[1, 0, 0, 0], [0, np.cos(th), -np.sin(th), 0], [0, np.sin(th), np.cos(th), 0], [0, 0, 0, 1]])
    aff = rot @ aff
    nib.save(nib.Nifti1Image(data, aff), str(tmp_path / "oblique.nii.gz"))
    rc = main(["--input", str(tmp_path / "oblique.nii.gz"), "--model-run", str(tiny_run), "--runs-dir", str(tmp_path / "runs"), "--name", "inf"])
    assert rc == 0
    out = tmp_path / "runs" / "medical" / "inf"
    mask = nib.load(str(out / "oblique_mask.nii.gz"))
    assert mask.shape == data.shape
    np.testing.assert_array_equal(mask.affine, nib.load(str(tmp_path / "oblique.nii.gz")).affine)
    vols = json.loads((out / "oblique_volumes.json").read_text())["volumes_ml"]
    m = np.asarray(mask.dataobj)
    voxel_ml = abs(np.linalg.det(aff[:3, :3])) / 1000
    assert vols["cerebellum"] == pytest.approx((m == 3).sum() * voxel_ml, rel=1e-3)
    assert (out / "oblique_overlay.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "cerebellum" in capsys.readouterr().out


def test_infer_cli_bad_input_is_one_line_error(tiny_run, tmp_path, capsys):
    from domains.medical.infer import main

    (tmp_path / "notes.nii.gz").write_text("hello")
    rc = main(["--input", str(tmp_path / "notes.nii.gz"), "--model-run", str(tiny_run), "--runs-dir", str(tmp_path / "runs"), "--no-track"])
    err = capsys.readouterr().err
    assert rc == 2 and "notes.nii.gz" in err and "Traceback" not in err


def test_score_folder_keeps_good_cases_and_reports_bad(tiny_run, brain_task, tmp_path, capsys):
    from core.scoring import read_output, read_quarantine
    from domains.medical.score import main

    folder = tmp_path / "in"
    folder.mkdir()
    src = nib.load(str(brain_task / "imagesTs" / "mni152.nii.gz"))
    small = np.asarray(src.dataobj)[40:160, 40:190, 30:150].astype(np.float32)
    aff = src.affine.copy()
    aff[:3, 3] += aff[:3, :3] @ np.array([40, 40, 30])
    nib.save(nib.Nifti1Image(small, aff), str(folder / "good.nii.gz"))
    (folder / "report.txt").write_text("not an image")
    nib.save(nib.Nifti1Image(np.full((8, 8, 8), np.nan, np.float32), np.eye(4)), str(folder / "nan.nii.gz"))
    out = tmp_path / "scores"
    rc = main(["--input", str(folder), "--model-run", str(tiny_run), "--runs-dir", str(tmp_path / "runs"), "--name", "sc", "--out", str(out),
               "--no-progress", "--items-per-chunk", "1", "--name-map"])
    assert rc == 0
    df, bad = read_output(out), read_quarantine(out)
    # rows are keyed by non-identifying ids (issue 13.11); the opt-in map beside the inputs names them
    name = dict(line.split(",") for line in (folder / ".dlsuite-ids.csv").read_text().splitlines()[1:])
    assert [name[c] for c in df["case"]] == ["good.nii.gz"]
    assert sorted(name[i] for i in bad["item_id"]) == ["nan.nii.gz", "report.txt"]
    ids = {v: k for k, v in name.items()}
    assert bad.set_index("item_id").loc[ids["nan.nii.gz"], "reason"].count("NaN") == 1
    mask = nib.load(df["mask_path"][0])
    assert mask.shape == small.shape and np.allclose(mask.affine, aff)
    assert {"ml_cerebrum_left", "ml_deep_grey_nuclei"} <= set(df.columns)
    assert f"skipped {ids['report.txt']}" in capsys.readouterr().err


def test_dicom_identifying_tags_never_reach_outputs_logs_or_mlflow(tiny_run, brain_task, tmp_path, capsys, caplog, dicom_writer, phi):
    PHI = phi
    from domains.medical.infer import main as infer_main
    from domains.medical.score import main as score_main

    src = nib.load(str(brain_task / "imagesTs" / "mni152.nii.gz"))
    vol = np.asarray(src.dataobj)[30:170, 30:200, 60:100:4].astype(np.int16)
    folder = dicom_writer(tmp_path / "in" / "series1", vol, spacing=(1.0, 1.0, 4.0), phi=PHI, modality="MR")
    import pydicom

    assert str(pydicom.dcmread(next(folder.glob("*.dcm"))).PatientName) == PHI["PatientName"]  # the tags really are there
    runs = tmp_path / "runs"
    caplog.set_level("DEBUG")
    assert infer_main(["--input", str(folder), "--model-run", str(tiny_run), "--runs-dir", str(runs), "--track"]) == 0
    assert score_main(["--input", str(tmp_path / "in"), "--model-run", str(tiny_run), "--runs-dir", str(runs), "--track", "--no-progress"]) == 0
    captured = capsys.readouterr()
    haystacks = [captured.out, captured.err, caplog.text]
    files = [p for p in runs.rglob("*") if p.is_file()]
    assert any(p.name.endswith("_mask.nii.gz") for p in files) and any(p.suffix == ".parquet" for p in files)
    assert (runs / "mlflow.db").is_file()
    for p in files:
        haystacks.append(p.read_bytes().decode("latin-1"))
    for needle in PHI.values():
        for variant in {needle, needle.replace("^", " "), needle.split("^")[0]}:
            assert not any(variant in h for h in haystacks), f"identifying value {variant!r} leaked"


def test_dashboard_api_contract(tiny_run, brain_task):
    from domains.medical import api

    cases = api.list_cases()
    mni = next(c for c in cases if c["id"] == "mni152")
    assert mni["dataset"] == "msd-brain-aal" and mni["label"] and mni["split"] == "test"
    seg = api.load_segmenter(tiny_run)
    res = seg.predict(mni["image"])
    assert res.image.shape == res.mask.shape == (197, 233, 189)
    assert res.class_names[0] == "background" and len(res.class_names) == 5
    assert np.allclose(np.sign(np.diag(res.affine)[:3]), 1)  # canonical RAS
    label = api.load_label(mni["label"])
    d = api.dice_per_class(res.mask, label, res.class_names)
    assert set(d) == set(res.class_names[1:]) and all(0 <= v <= 1 for v in d.values())
    back = nib.Nifti1Image.from_bytes(res.to_nifti_bytes())
    np.testing.assert_array_equal(np.asarray(back.dataobj), res.mask)
    assert set(res.volumes_ml) == set(res.class_names[1:])


def test_monai_bundle_exports_and_runs_back_with_monai(tiny_run, brain_task, tmp_path):
    from domains.medical.export import export_bundle, run_bundle
    from domains.medical.predict import Segmenter
    from domains.medical.io import load_volume

    b = export_bundle(tiny_run, tmp_path / "bundle")
    meta = json.loads((b / "configs" / "metadata.json").read_text())
    assert meta["network_data_format"]["outputs"]["pred"]["channel_def"]["4"] == "deep_grey_nuclei"
    assert (b / "models" / "model.pt").is_file()
    import torch

    torch.load(b / "models" / "model.pt", weights_only=True)  # tensors only
    src = nib.load(str(brain_task / "imagesTs" / "mni152.nii.gz"))
    small = np.asarray(src.dataobj)[30:170, 30:200, 20:160].astype(np.float32)
    aff = src.affine.copy()
    aff[:3, 3] += aff[:3, :3] @ np.array([30, 30, 20])
    (tmp_path / "in").mkdir()
    nib.save(nib.Nifti1Image(small, aff), str(tmp_path / "in" / "case.nii.gz"))
    masks = run_bundle(b, tmp_path / "in", tmp_path / "out")
    assert [m.name for m in masks] == ["case_seg.nii.gz"]
    bm = nib.load(str(masks[0]))
    assert bm.shape[:3] == small.shape and np.allclose(bm.affine, aff)
    ours = Segmenter.from_run(tiny_run).predict_volume(load_volume(tmp_path / "in" / "case.nii.gz"))
    agree = (np.asarray(bm.dataobj).reshape(small.shape) == ours).mean()
    assert agree > 0.95, agree  # monai.bundle reproduces our own inference


def test_2p5d_efficientnet_lora_trains_few_params_and_shares_the_3d_evaluation(brain_task, tmp_path):
    """The core's ImageNet EfficientNet-Lite0 as a 2.5D encoder: LoRA trains far fewer parameters than
    full fine-tuning, and the run loads back through the same Segmenter as the 3D net."""
    from domains.medical.predict import Segmenter
    from domains.medical.config import SliceConfig
    from domains.medical.slices import train_slices

    cfg = parse_config(SliceConfig, ["--runs-dir", str(tmp_path), "--name", "lora", "--mode", "lora", "--steps", "2", "--batch", "2",
                                     "--spacing", "6", "--no-track", "--threads", "1"])
    run = train_slices(cfg)
    m = json.loads((run / "metrics.json").read_text())
    assert m["trainable_params"] < 0.35 * m["total_params"]
    assert 0 <= m["test_mean_dice"] <= 1 and "test_dice/deep_grey_nuclei" in m
    seg = Segmenter.from_run(run)  # LoRA merged: loads as a plain model
    assert type(seg.model).__name__ == "SliceStackSegmenter"
    assert not any("lora_" in k for k in seg.model.state_dict())


@pytest.mark.slow
@pytest.mark.timeout(1800)  # default settings: > 600 s on a 2-core AMD EPYC (AVX2, no AMX; val Dice 0.90 at epoch 50 when cut)
def test_default_training_reaches_dice_target_on_heldout_mni152(brain_task, tmp_path):
    """Quality target: mean foreground Dice ≥ 0.80 on the held-out volume, 4 classes, default settings."""
    from domains.medical.config import TrainConfig
    from domains.medical.train import train

    run = train(parse_config(TrainConfig, ["--runs-dir", str(tmp_path), "--no-track"]))
    m = json.loads((run / "metrics.json").read_text())
    assert m["test_mean_dice"] >= 0.80, m
    assert min(m[f"test_dice/{c}"] for c in ("cerebrum_left", "cerebrum_right", "cerebellum")) >= 0.85, m


def test_ct_task_trains_with_hu_window_and_evaluates_on_heldout_slab(ct_task, tmp_path, tiny_args):
    from domains.medical.config import TrainConfig
    from domains.medical.train import train

    run = train(parse_config(TrainConfig, ["--task", "msd-headct-bone", "--runs-dir", str(tmp_path), "--no-track", *tiny_args]))
    task = json.loads((run / "task.json").read_text())
    assert task["modality"] == "CT" and task["pipeline"]["ct_level"] == 400.0
    m = json.loads((run / "metrics.json").read_text())
    assert {"test_dice/soft_tissue", "test_dice/bone"} <= set(m)
    ev = json.loads((run / "test_evaluation.json").read_text())
    assert ev["cases"][0]["case"] == "headct_inferior"


def test_score_local_and_ray_engines_write_identical_outputs(tiny_run, brain_task, tmp_path, ray_address):
    from core.scoring import WorkItem
    from tests.scoring_support import assert_engines_agree
    from domains.medical.scoring import SegmentationScorer

    folder = tmp_path / "in"
    folder.mkdir()
    src = nib.load(str(brain_task / "imagesTs" / "mni152.nii.gz"))
    data = np.asarray(src.dataobj).astype(np.float32)
    aff = src.affine.copy()
    aff[:3, 3] += aff[:3, :3] @ np.array([40, 40, 30])
    nib.save(nib.Nifti1Image(data[40:140, 40:160, 30:120], aff), str(folder / "a.nii.gz"))
    nib.save(nib.Nifti1Image(data[60:150, 50:170, 40:130], aff), str(folder / "b.nii.gz"))
    (folder / "broken.nii.gz").write_bytes(b"not a nifti")
    items = [WorkItem(id=p.name, path=str(p)) for p in sorted(folder.iterdir())]
    rows = assert_engines_agree(items, SegmentationScorer(str(tiny_run), str(tmp_path / "masks")), tmp_path, ray_address, items_per_chunk=1)
    assert sorted(rows["work_item"].unique()) == ["a.nii.gz", "b.nii.gz"]


def test_ddp_under_torchrun_two_processes(brain_task, tiny_args, tmp_path):
    """``torchrun -m domains.medical.train``: two ranks train one model (DDP over Gloo), rank 0 alone
    writes one run directory with the metrics of both ranks, and the model loads back."""
    import subprocess
    import sys

    from core.distributed import free_port
    from domains.medical.predict import Segmenter

    env = {**os.environ, "SUITE_PROGRESS": "0", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1", f"--master_port={free_port()}",
           "-m", "domains.medical.train", *tiny_args, "--runs-dir", str(tmp_path), "--name", "ddp", "--no-track", "--no-evaluate-test"]
    p = subprocess.run(cmd, cwd=Path(__file__).resolve().parents[2], env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    runs = [d.name for d in (tmp_path / "medical").iterdir() if d.is_dir() and not d.is_symlink()]
    assert runs == ["ddp"]  # the follower rank wrote no run of its own
    m = json.loads((tmp_path / "medical" / "ddp" / "metrics.json").read_text())
    assert m["world_size"] == 2 and m["steps"] == 6
    rows = [json.loads(line) for line in (tmp_path / "medical" / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "train_loss" in r] == [3, 6]  # logged once per epoch, by rank 0 only
    Segmenter.from_run(tmp_path / "medical" / "ddp")


def test_commands_without_ddp_refuse_torchrun(monkeypatch, tmp_path):
    """A rank > 0 of a command that does not train data-parallel fails with a clear error instead of
    training a second copy into the same runs folder."""
    from core.runs import Run
    from domains.medical.config import EvaluateConfig

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match="does not train data-parallel"):
        Run.start("medical", parse_config(EvaluateConfig, ["--runs-dir", str(tmp_path), "--no-track"]), kind="job")
    assert not (tmp_path / "medical").exists()
