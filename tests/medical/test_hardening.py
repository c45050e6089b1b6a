"""Issue 13 (medical points) and 14.4/14.5: refusals before allocation (13.8), a killed score job finished
by rerunning the identical command (13.5), no patient identifiers through names (13.11), connected-component
post-processing and mirror test-time augmentation (14.4), the out-of-distribution guard (14.5)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from domains.medical.data import BRAIN_CLASSES

ROOT = Path(__file__).resolve().parents[2]


def _header_only_nifti(path: Path, shape, spacing) -> Path:
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(np.float32)
    hdr.set_zooms(spacing)
    hdr.set_qform(np.diag([*spacing, 1.0]), code=1)
    hdr.set_sform(np.diag([*spacing, 1.0]), code=1)
    with open(path, "wb") as fh:  # header only: reading the data would allocate gigabytes
        fh.write(hdr.binaryblock + b"\0" * 4)
    return path


def _small_mni(brain_task: Path, box=(slice(40, 160), slice(40, 190), slice(30, 150))) -> tuple[np.ndarray, np.ndarray]:
    src = nib.load(str(brain_task / "imagesTs" / "mni152.nii.gz"))
    data = np.asarray(src.dataobj)[box].astype(np.float32)
    aff = src.affine.copy()
    aff[:3, 3] += aff[:3, :3] @ np.array([b.start for b in box])
    return data, aff


# --- 13.8: refused from the header, fast, no run folder ----------------------------------------------


@pytest.mark.parametrize("make, expected", [
    (lambda d: _header_only_nifti(d / "metres.nii", (197, 233, 189), (100.0, 100.0, 100.0)), "absurd voxel spacing"),
    (lambda d: _header_only_nifti(d / "micro.nii", (197, 233, 189), (0.002, 0.002, 0.002)), "absurd voxel spacing"),
    (lambda d: _header_only_nifti(d / "huge_fov.nii", (1000, 1000, 500), (10.0, 10.0, 10.0)), "resample to"),
])
def test_implausible_inputs_refused_before_allocation_without_a_run(tiny_run, tmp_path, capsys, make, expected):
    from domains.medical.infer import main

    src = make(tmp_path)
    runs = tmp_path / "runs"
    t0 = time.perf_counter()
    rc = main(["--input", str(src), "--model-run", str(tiny_run), "--runs-dir", str(runs), "--no-track"])
    elapsed = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert rc == 2 and expected in err and src.name in err and "Traceback" not in err, err
    assert not (runs / "medical").exists()  # nothing in the runs listing
    assert elapsed < 5.0, elapsed  # from the header: no model load, no allocation


def test_a_single_dicom_file_gets_a_single_file_message(tiny_run, tmp_path, capsys, dicom_writer):
    from domains.medical.infer import main

    folder = dicom_writer(tmp_path / "series", np.zeros((8, 8, 4), np.int16))
    one = next(folder.glob("*.dcm"))
    rc = main(["--input", str(one), "--model-run", str(tiny_run), "--runs-dir", str(tmp_path / "runs"), "--no-track"])
    err = capsys.readouterr().err
    assert rc == 2 and "single DICOM file" in err and "pass the folder" in err, err
    assert not (tmp_path / "runs" / "medical").exists()


# --- 13.11: no identifiers through names -------------------------------------------------------------


IDENTIFYING = ("DOE^JOHN", "MRN12345678", "SMITH^ANNA")


def test_score_keys_everything_by_non_identifying_ids(tiny_run, brain_task, tmp_path, capsys, caplog, dicom_writer):
    from domains.medical.score import main

    data, aff = _small_mni(brain_task, (slice(60, 120), slice(70, 140), slice(50, 110)))
    folder = tmp_path / "incoming"
    folder.mkdir()
    nib.save(nib.Nifti1Image(data, aff), str(folder / "MRN12345678.nii.gz"))
    dicom_writer(folder / "DOE^JOHN", data[:, :, ::6].astype(np.int16), spacing=(1.0, 1.0, 6.0), modality="MR")
    (folder / "SMITH^ANNA_notes.txt").write_text("not an image")
    runs = tmp_path / "runs"
    caplog.set_level("DEBUG")
    assert main(["--input", str(folder), "--model-run", str(tiny_run), "--runs-dir", str(runs), "--track", "--no-progress",
                 "--items-per-chunk", "1"]) == 0
    assert not (folder / ".dlsuite-ids.csv").exists()  # the map back to names is opt-in only
    out = capsys.readouterr()
    files = [p for p in runs.rglob("*") if p.is_file()]
    assert (runs / "mlflow.db").is_file() and any(p.suffix == ".parquet" for p in files) and any(p.name.endswith("_mask.nii.gz") for p in files)
    haystacks = {"stdout": out.out, "stderr": out.err, "log": caplog.text}
    haystacks.update({str(p): p.read_bytes().decode("latin-1") for p in files})
    haystacks.update({str(p): str(p) for p in runs.rglob("*")})  # file and folder names too
    for needle in IDENTIFYING:
        for variant in {needle, needle.split("^")[0], needle.replace("^", " ")}:
            leaks = [k for k, h in haystacks.items() if variant in h]
            assert not leaks, f"{variant!r} leaked into {leaks}"
    assert "skipped vol-" in out.err  # the bad file is still reported, by its id

    # opt in: the map is written beside the inputs (and only there)
    assert main(["--input", str(folder), "--model-run", str(tiny_run), "--runs-dir", str(runs), "--no-track", "--no-progress",
                 "--items-per-chunk", "1", "--name-map"]) == 0
    mapping = (folder / ".dlsuite-ids.csv").read_text()
    assert all(n in mapping for n in ("DOE^JOHN", "MRN12345678.nii.gz", "SMITH^ANNA_notes.txt"))
    assert not any("DOE" in p.read_bytes().decode("latin-1") for p in runs.rglob("*") if p.is_file())


# --- 13.5: rerunning the identical command finishes a killed job --------------------------------------


@pytest.mark.slow
def test_score_rerun_after_sigkill_finishes_the_same_job(tiny_run, brain_task, tmp_path):
    from core.scoring import read_output

    data, aff = _small_mni(brain_task, (slice(60, 120), slice(70, 140), slice(50, 110)))
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(4):
        nib.save(nib.Nifti1Image(data * (1 + 0.1 * i), aff), str(folder / f"case{i}.nii.gz"))
    runs = tmp_path / "runs"
    cmd = [sys.executable, "-m", "domains.medical.score", "--input", str(folder), "--model-run", str(tiny_run), "--runs-dir", str(runs),
           "--no-track", "--no-progress", "--items-per-chunk", "1"]
    env = {**os.environ, "SUITE_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 600
    marker = None
    while marker is None and proc.poll() is None and time.time() < deadline:
        marker = next(iter(runs.glob("medical/score-*/scores/_done/chunk-*.json")), None)
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert marker is not None, proc.stderr.read().decode()[-2000:]
    assert proc.returncode == -signal.SIGKILL
    job = marker.parents[2]
    assert not (job / "scores" / "_SUCCESS.json").exists()  # killed before the end
    rerun = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert [p.name for p in runs.glob("medical/score-*")] == [job.name]  # the same run folder, finished
    assert "skipped" in rerun.stdout + rerun.stderr  # committed chunks were not scored again
    assert len(read_output(job / "scores")) == 4
    assert json.loads((job / "run.json").read_text())["status"] == "completed"


# --- 14.4: largest connected component, mirror TTA ---------------------------------------------------


def test_largest_component_per_single_structure_class_only():
    from domains.medical.postprocess import keep_largest_components, lcc_classes

    m = np.zeros((30, 30, 30), np.uint8)
    m[2:12, 2:12, 2:12] = 1        # cerebrum_left
    m[20:23, 20:23, 20:23] = 1     # a stray blob of it, far away
    m[14:18, 2:6, 2:6] = 4         # deep grey nuclei: left nucleus ...
    m[14:18, 24:28, 24:28] = 4     # ... and right nucleus (two components by definition)
    assert lcc_classes(BRAIN_CLASSES) == [1, 2, 3]
    out = keep_largest_components(m, BRAIN_CLASSES)
    assert (out[20:23, 20:23, 20:23] == 0).all() and (out[2:12, 2:12, 2:12] == 1).all()
    assert (out == 4).sum() == (m == 4).sum()


def test_mirror_tta_swaps_the_lateral_labels():
    from domains.medical.postprocess import lateral_permutation, mirror_tta_logits

    assert lateral_permutation(BRAIN_CLASSES) == [0, 2, 1, 3, 4]
    assert lateral_permutation(["background", "soft_tissue", "bone"]) is None

    def by_position(x: torch.Tensor) -> torch.Tensor:
        """A 'network' that calls the first half of axis 0 right and the other half left (what a net
        trained on upright brains does): mirrored, it sees each hemisphere on the other side."""
        n = x.shape[2]
        logits = torch.zeros(1, 5, *x.shape[2:])
        logits[0, 2, : n // 2] = 5.0  # cerebrum_right
        logits[0, 1, n // 2:] = 5.0   # cerebrum_left
        return logits + 0.0 * x       # (shape of the input; values by position only)

    img = torch.rand(1, 1, 8, 4, 4)
    plain = torch.softmax(by_position(img), 1)
    tta = torch.softmax(mirror_tta_logits(by_position, img, BRAIN_CLASSES), 1)
    assert torch.allclose(tta, plain, atol=1e-5)  # mirrored, predicted, mirrored back, labels swapped: the same answer


# --- 14.5: out-of-distribution guard ------------------------------------------------------------------


def test_ood_guard_on_real_label_volumes(brain_task):
    from domains.medical import qc
    from domains.medical.predict import volumes_ml

    lab = nib.load(str(brain_task / "labelsTs" / "mni152.nii.gz"))
    m = np.asarray(lab.dataobj)
    ok = qc.check(volumes_ml(m, lab.header.get_zooms()[:3], BRAIN_CLASSES), mean_confidence=0.95)
    assert not ok.flagged, ok.reasons  # the reference segmentation of the held-out adult template passes
    big = qc.check(volumes_ml(m, (1.5, 1.5, 1.5), BRAIN_CLASSES), mean_confidence=0.95)  # the same head at 1.5 mm voxels: 3.4x
    assert big.flagged and "total brain volume" in big.reason
    one_sided = np.where(m == 2, 0, m)
    assert "hemispheres differ" in qc.check(volumes_ml(one_sided, (1.0, 1.0, 1.0), BRAIN_CLASSES)).reason
    assert "confidence" in qc.check(volumes_ml(m, (1.0, 1.0, 1.0), BRAIN_CLASSES), mean_confidence=0.5).reason


def test_infer_flags_an_implausible_result_in_its_table_and_log(tiny_run, brain_task, tmp_path, caplog):
    """The session's tiny (6-step) model on a real scan: its segmentation is not a plausible brain, and
    infer says so in the volumes table and the log (with --tta and --lcc on)."""
    from domains.medical.infer import main

    data, aff = _small_mni(brain_task)
    nib.save(nib.Nifti1Image(data, aff), str(tmp_path / "scan.nii.gz"))
    caplog.set_level("WARNING")
    rc = main(["--input", str(tmp_path / "scan.nii.gz"), "--model-run", str(tiny_run), "--runs-dir", str(tmp_path / "runs"), "--name", "ood",
               "--no-track", "--tta", "--lcc"])
    assert rc == 0
    rec = json.loads((tmp_path / "runs" / "medical" / "ood" / "scan_volumes.json").read_text())
    assert rec["ood_flag"] is True and rec["ood_reason"] and 0.0 <= rec["mean_confidence"] <= 1.0
    assert "out of distribution" in caplog.text and rec["ood_reason"] in caplog.text


@pytest.mark.slow  # ~40 s under load: the 1 mm deformed validation volume and its HD95
def test_inference_settings_are_chosen_on_the_validation_case(tiny_run, tmp_path):
    """``evaluate --split val`` scores the case training selects on (never the test volume), with the switches."""
    from domains.medical.evaluate import main

    runs = tmp_path / "runs"
    assert main(["--model-run", str(tiny_run), "--runs-dir", str(runs), "--name", "val", "--split", "val", "--no-track", "--no-lcc"]) == 0
    ev = json.loads((runs / "medical" / "val" / "evaluation.json").read_text())
    assert [c["case"] for c in ev["cases"]] == ["validation"] and 0.0 <= ev["mean_dice"] <= 1.0
