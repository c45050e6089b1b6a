"""A new user's mistakes get one clear error, not a traceback or a silent wrong answer: a malformed MSD
``dataset.json``, bad labels found while training preprocesses (MONAI used to wrap them in its own
RuntimeError), complex voxels, NIfTI files shorter than their header declares, a folder of NIfTI files
given as one input, and voxel-level refusals in ``infer`` that used to leave a failed run folder."""

from __future__ import annotations

import gzip
import json
import tracemalloc
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from domains.medical.validation import MedicalInputError

LABELS = {"0": "background", "1": "thing"}


def _volume(path: Path, data: np.ndarray, affine=None) -> Path:
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0]) if affine is None else affine), str(path))
    return path


def _msd(root: Path, dataset: bytes | dict) -> Path:
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    img = np.random.default_rng(0).random((12, 12, 12)).astype(np.float32)
    lab = (img > 0.5).astype(np.uint8)
    _volume(root / "imagesTr" / "c1.nii.gz", img)
    _volume(root / "labelsTr" / "c1.nii.gz", lab)
    raw = dataset if isinstance(dataset, bytes) else json.dumps(dataset).encode()
    (root / "dataset.json").write_bytes(raw)
    return root


GOOD = {"name": "t", "modality": {"0": "MRI"}, "labels": LABELS,
        "training": [{"image": "./imagesTr/c1.nii.gz", "label": "./labelsTr/c1.nii.gz"}], "test": []}


def test_dataset_json_with_a_byte_order_mark_is_read(tmp_path):
    from domains.medical.data import read_msd_task

    task = read_msd_task(_msd(tmp_path / "t", b"\xef\xbb\xbf" + json.dumps(GOOD).encode()))
    assert task.class_names == ["background", "thing"] and len(task.training) == 1


@pytest.mark.parametrize("dataset, expected", [
    (json.dumps({**GOOD, "name": "Täsk"}, ensure_ascii=False).encode("latin-1"), "not UTF-8"),
    ([GOOD], "expected a JSON object"),
    ({**GOOD, "labels": {"background": 0, "spleen": 1}}, "keys must be class ids"),
    ({**GOOD, "test": [{"label": "./labelsTr/c1.nii.gz"}]}, "each 'test' entry"),
    ({**GOOD, "test": [5]}, "each 'test' entry"),
    ({**GOOD, "training": "imagesTr"}, "'training' must be a list"),
    ({**GOOD, "training": [{"image": "./imagesTr/c1.nii.gz", "label": None}]}, "each 'training' entry"),
])
def test_malformed_dataset_json_is_a_user_error(tmp_path, dataset, expected):
    from domains.medical.data import read_msd_task

    raw = dataset if isinstance(dataset, bytes) else json.dumps(dataset).encode()
    with pytest.raises(MedicalInputError, match=expected) as e:
        read_msd_task(_msd(tmp_path / "t", raw))
    assert "dataset.json" in str(e.value)


@pytest.mark.parametrize("bad, expected", [("float", "non-integer values"), ("shape", "does not match image"), ("range", "label values span")])
def test_bad_labels_leave_training_preprocessing_as_user_errors(tmp_path, bad, expected):
    """``preprocess`` is MONAI's Compose: without unwrapping, these came out as RuntimeError('applying transform ...') tracebacks."""
    from domains.medical.config import PipelineConfig
    from domains.medical.transforms import preprocess

    img = np.random.default_rng(0).random((12, 12, 12)).astype(np.float32)
    lab = {"float": (img > 0.5) + 0.3, "shape": (img[:-2] > 0.5), "range": (img > 0.5) * 7}[bad].astype(np.float32)
    case = {"image": str(_volume(tmp_path / "img.nii.gz", img)), "label": str(_volume(tmp_path / "lab.nii.gz", lab))}
    with pytest.raises(MedicalInputError, match=expected):
        preprocess(PipelineConfig(modality="MRI", num_classes=2, spacing=4.0, patch=8))(case)


def test_complex_voxels_are_refused_not_silently_cast(tmp_path):
    from domains.medical.io import load_volume

    data = (np.ones((8, 8, 8)) + 1j * np.ones((8, 8, 8))).astype(np.complex64)
    with pytest.raises(MedicalInputError, match="complex voxels"):
        load_volume(_volume(tmp_path / "c.nii.gz", data))


def _header_only(shape, dtype=np.float32) -> bytes:
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(dtype)
    hdr.set_zooms((1.0, 1.0, 1.0))
    hdr.set_sform(np.eye(4), code=1)
    return hdr.binaryblock + b"\0" * 4 + b"\0" * 1000


@pytest.mark.parametrize("name", ["big.nii", "big.nii.gz"])
def test_nifti_shorter_than_its_header_is_refused_before_allocating(tmp_path, name):
    from domains.medical.io import check_input, load_volume

    raw = _header_only((1000, 1000, 500))  # 2 GB declared, 1 kB present
    path = tmp_path / name
    path.write_bytes(gzip.compress(raw) if name.endswith(".gz") else raw)
    for fn in (lambda: check_input(path, 3.0), lambda: load_volume(path)):
        tracemalloc.start()
        with pytest.raises(MedicalInputError, match="truncated or damaged"):
            fn()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 50e6, peak  # was the full 2 GB array before the error


def test_an_intact_all_zero_nii_gz_is_not_taken_for_truncated(tmp_path):
    """Zeros compress ~1000:1, right at deflate's limit: the size bound must still let them through."""
    from domains.medical.io import check_input

    path = _volume(tmp_path / "zeros.nii.gz", np.zeros((160, 160, 160), np.float32))
    assert check_input(path, 3.0)[0] == (160, 160, 160)


def test_a_folder_of_nifti_files_is_named_as_such(tmp_path):
    from domains.medical.io import check_input, load_volume

    folder = tmp_path / "scans"
    folder.mkdir()
    _volume(folder / "a.nii.gz", np.ones((8, 8, 8), np.float32))
    for fn in (check_input, load_volume):
        with pytest.raises(MedicalInputError, match="holds 1 NIfTI/NRRD file.*domains.medical.score"):
            fn(folder)


@pytest.mark.parametrize("make, expected", [
    (lambda d: _volume(d / "series.nii.gz", np.ones((20, 20, 20, 2), np.float32)), "4D"),
    (lambda d: _volume(d / "nan.nii.gz", np.where(np.eye(20)[:, :, None] > 0, np.nan, 1.0).repeat(20, 2).astype(np.float32)), "NaN"),
    (lambda d: "", "--input is empty"),
    # a blank image (every voxel one value) was segmented into several hundred mL of "brain", flagged only as out of distribution
    (lambda d: _volume(d / "blank.nii.gz", np.zeros((20, 20, 20), np.float32)), "every voxel is 0: a blank image has nothing to segment"),
    (lambda d: _volume(d / "flat.nii.gz", np.full((20, 20, 20), 7, np.int16)), "every voxel is 7: a blank image"),
    # float64 intensities beyond float32 became inf in the network's input: a mask of nothing, 0 mL everywhere
    (lambda d: _volume(d / "f64.nii.gz", np.random.default_rng(0).random((20, 20, 20)) * 1e300), "intensities up to 1e+300 do not fit float32"),
])
def test_infer_refuses_what_only_the_voxels_show_without_a_run_folder(tiny_run, tmp_path, capsys, make, expected):
    from domains.medical.infer import main

    runs = tmp_path / "runs"
    rc = main(["--input", str(make(tmp_path)), "--model-run", str(tiny_run), "--runs-dir", str(runs), "--no-track"])
    err = capsys.readouterr().err
    assert rc == 2 and expected in err and "Traceback" not in err, err
    assert not (runs / "medical").exists()  # was a "failed" run in the listing


def test_score_refuses_an_empty_input_instead_of_scoring_the_default_task(tiny_run, tmp_path, capsys):
    from domains.medical.score import main

    rc = main(["--input", "", "--model-run", str(tiny_run), "--runs-dir", str(tmp_path / "runs"), "--no-track", "--no-progress"])
    assert rc == 2 and "--input is empty" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "medical").exists()


def test_mask_keeps_the_inputs_own_qform_when_it_differs_from_the_sform(tmp_path):
    """Scanner qform + template-aligned sform: the mask's qform used to be the image's sform, so a viewer
    reading the qform drew the mask 9 mm away from the image."""
    from domains.medical.io import load_volume, save_mask_like

    q = np.diag([2.0, 2.0, 2.0, 1.0])
    q[:3, 3] = [-20.0, -30.0, -10.0]
    s = q.copy()
    s[:3, 3] += [5.0, -7.0, 3.0]
    img = nib.Nifti1Image(np.random.default_rng(0).random((10, 12, 14)).astype(np.float32), None)
    img.set_qform(q, code=1)
    img.set_sform(s, code=2)
    nib.save(img, str(tmp_path / "scan.nii.gz"))
    vol = load_volume(tmp_path / "scan.nii.gz")
    mask = nib.load(str(save_mask_like(np.ones(vol.shape, np.uint8), vol, tmp_path / "mask.nii.gz")))
    mq, mq_code = mask.header.get_qform(coded=True)
    ms, ms_code = mask.header.get_sform(coded=True)
    assert (int(mq_code), int(ms_code)) == (1, 2)
    np.testing.assert_allclose(mq, q, atol=1e-5)
    np.testing.assert_allclose(ms, s, atol=1e-5)
    np.testing.assert_allclose(mask.affine, vol.affine, atol=1e-5)


def _alter_slice(folder: Path, index: int, change) -> None:
    import pydicom

    f = sorted(folder.glob("*.dcm"))[index]
    ds = pydicom.dcmread(str(f))
    change(ds)
    ds.save_as(str(f))


def _tilt(ds):
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0.9, 0.43589]


def _finer(ds):
    ds.PixelSpacing = [0.5, 0.5]


def _smaller(ds):
    ds.Rows = 8
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]


@pytest.mark.parametrize("change, expected", [(_tilt, "orientation"), (_finer, "pixel spacing"), (_smaller, "size")])
def test_a_dicom_slice_with_another_geometry_is_refused_not_placed_silently(tmp_path, dicom_writer, change, expected):
    """The volume's geometry comes from the first slice: a tilted or finer slice used to be stacked in as if it matched."""
    from domains.medical.io import load_volume

    folder = dicom_writer(tmp_path / "series", np.zeros((16, 16, 6), np.int16))
    _alter_slice(folder, 3, change)
    with pytest.raises(MedicalInputError, match=f"1 of 6 DICOM slices differ from the first in {expected}"):
        load_volume(folder)


def test_a_4d_nrrd_is_named_4d_from_its_header(tmp_path):
    import nrrd

    from domains.medical.io import check_input, load_volume

    path = tmp_path / "series.nrrd"
    nrrd.write(str(path), np.ones((2, 10, 10, 10), np.float32),
               {"kinds": ["list", "domain", "domain", "domain"], "space": "RAS", "space directions": np.array([[np.nan] * 3, *np.eye(3)])})
    assert check_input(path, 3.0, volume=1)[1] == (1.0, 1.0, 1.0)  # the non-spatial axis does not read as a NaN spacing ("absurd voxel spacing (nan, 1, 1, 1)")
    for call in (lambda: check_input(path, 3.0), lambda: load_volume(path)):  # from the header, as a 4D NIfTI (test_batch_choices.py)
        with pytest.raises(MedicalInputError, match="got 4D data .* 2 volumes along its 'list' axis 1 of 4"):
            call()


@pytest.mark.parametrize("change, expected", [
    ({}, "2 classes"),  # GOOD: background + one class, MRI
    ({"modality": {"0": "CT"}, "labels": {str(i): n for i, n in enumerate(["background", "a", "b", "c", "d"])}}, "modality CT"),
])
def test_evaluate_refuses_a_task_the_model_was_not_trained_for(tiny_run, tmp_path, capsys, change, expected):
    """The brain model used to report its own class names' Dice against a spleen-like or CT task's labels."""
    from domains.medical.evaluate import main

    task = _msd(tmp_path / "other", {**GOOD, **change, "test": [{"image": "./imagesTr/c1.nii.gz", "label": "./labelsTr/c1.nii.gz"}]})
    runs = tmp_path / "runs"
    rc = main(["--task", str(task), "--model-run", str(tiny_run), "--runs-dir", str(runs), "--no-track"])
    err = capsys.readouterr().err
    assert rc == 2 and expected in err and "Traceback" not in err, err
    assert not (runs / "medical").exists()


@pytest.mark.parametrize("name, compress, expected", [("scan.nii", True, "name it .nii.gz"), ("scan.nii.gz", False, "name it .nii")])
def test_a_renamed_nifti_gets_told_its_right_suffix(tmp_path, name, compress, expected):
    from domains.medical.io import check_input

    raw = nib.Nifti1Image(np.ones((8, 8, 8), np.float32), np.eye(4)).to_bytes()
    path = tmp_path / name
    path.write_bytes(gzip.compress(raw) if compress else raw)
    with pytest.raises(MedicalInputError, match=f"{expected}$"):
        check_input(path, 3.0)


def test_a_dicom_export_tree_is_told_to_pass_the_series_folder(tmp_path, dicom_writer):
    from domains.medical.io import check_input

    dicom_writer(tmp_path / "export" / "STUDY1" / "SERIES1", np.zeros((8, 8, 4), np.int16))
    with pytest.raises(MedicalInputError, match="1 sub-folder.*pass that folder"):
        check_input(tmp_path / "export", 3.0)


@pytest.mark.parametrize("argv, flag", [(["--max-epochs", "0"], "--max-epochs 0"), (["--lr", "-1"], "--lr -1.0"),
                                        (["--overlap", "1"], "--overlap 1.0"), (["--patch", "0"], "--patch 0"), (["--spacing", "nan"], "--spacing nan")])
def test_training_flags_outside_what_can_work_are_one_line_before_a_run(tmp_path, capsys, argv, flag):
    """Declared ranges (core.config): --max-epochs 0 saved an untrained model, --lr -1 failed inside AdamW, --overlap 1 inside MONAI."""
    from core.config import parse_config
    from domains.medical.config import TrainConfig

    with pytest.raises(SystemExit) as e:
        parse_config(TrainConfig, [*argv, "--runs-dir", str(tmp_path / "runs")])
    assert e.value.code == 2 and flag in capsys.readouterr().err and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("content", [b"[1, 2]", b'{"class_names": "brain", "pipeline": {}, "model": {}}', b'{"task": "x"', b"\xff\xfe"])
def test_a_damaged_task_json_of_a_run_is_one_line_naming_it(tmp_path, content):
    """A list, a string for class_names, a cut-short or non-UTF-8 task.json gave list-index/KeyError tracebacks (dashboards, infer, evaluate)."""
    from domains.medical.data import MedicalInputError, read_task_meta

    for name in ("config.json", "best.safetensors"):
        (tmp_path / name).write_bytes(b"{}")
    (tmp_path / "task.json").write_bytes(content)
    with pytest.raises(MedicalInputError, match="task.json: damaged run file"):
        read_task_meta(tmp_path)


@pytest.mark.parametrize("argv, expected", [
    (["--task", "CT"], "it segments 5 classes (background, cerebrum_left, cerebrum_right, cerebellum, deep_grey_nuclei; task msd-brain-aal), "
                       "this task HeadCTBone has 3 (background, soft_tissue, bone); initialise from a run trained on a task with these 3 classes"),
    (["--channels", "8", "16"], "its --channels are 8 16 32, this one's 8 16; train with --model unet --channels 8 16 32 as that run was"),
    (["--model", "segresnet"], "its model is unet, this one --model segresnet"),
])
def test_init_from_a_run_whose_network_does_not_fit_is_one_line_before_a_run(tiny_run, ct_task, tiny_args, tmp_path, capsys, argv, expected):
    """--init-from a run with another number of classes (or another --channels/--model) was a tensor-shape error
    ('model.2.0.conv.weight' has shape (16, 5, 3, 3, 3) ...) after the volumes were cached and a failed run folder made."""
    from domains.medical.train import main

    argv = [str(ct_task) if a == "CT" else a for a in argv]
    assert main(["--runs-dir", str(tmp_path / "runs"), "--no-track", *tiny_args, "--init-from", str(tiny_run), *argv]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and f"--init-from {tiny_run}: its weights do not fit" in err[0] and expected in err[0], err
    assert "or train without --init-from" in err[0] and not (tmp_path / "runs" / "medical").exists()


def test_init_from_an_unknown_run_names_the_init_from_flag(tiny_run, tiny_args, tmp_path, capsys):
    from core.config import parse_config
    from domains.medical.config import TrainConfig
    from domains.medical.train import main
    from domains.medical.training import init_source, load_training_task

    assert main(["--runs-dir", str(tmp_path / "runs"), "--no-track", *tiny_args, "--init-from", "nope"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and err[0].startswith("error: --init-from nope: no run named 'nope'") and not (tmp_path / "runs" / "medical").exists()
    cfg = parse_config(TrainConfig, ["--runs-dir", str(tmp_path / "runs"), *tiny_args, "--init-from", str(tiny_run)])
    assert init_source(cfg, load_training_task(cfg.task)) == tiny_run.resolve()  # the same network: it fits


def test_evaluate_on_test_images_without_labels_is_one_line_before_a_run(tiny_run, tmp_path, capsys):
    """An MSD task lists its test images without labels: evaluate loaded the model, made a run folder, then failed with
    'no labelled test case to evaluate on' (a failed job run, no hint)."""
    from domains.medical.evaluate import main

    brain = ["background", "cerebrum_left", "cerebrum_right", "cerebellum", "deep_grey_nuclei"]
    task = _msd(tmp_path / "msd", {**GOOD, "labels": dict(enumerate(brain)), "test": ["./imagesTr/c1.nii.gz"]})
    runs = tmp_path / "runs"
    rc = main(["--task", str(task), "--model-run", str(tiny_run), "--runs-dir", str(runs), "--no-track"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert rc == 2 and len(err) == 1 and "--split test: none of the 1 test case(s)" in err[0] and "--split val" in err[0], err
    assert not (runs / "medical").exists()


def test_score_quarantines_a_blank_image_and_scores_the_others(tiny_run, tmp_path):
    """Each volume is checked where it is segmented (Segmenter.preprocess): a blank one is quarantined with the reason."""
    from core.scoring import read_output, read_quarantine
    from domains.medical.score import main

    folder = tmp_path / "in"
    folder.mkdir()
    _volume(folder / "blank.nii.gz", np.zeros((24, 24, 24), np.float32))
    _volume(folder / "noise.nii.gz", np.random.default_rng(1).random((24, 24, 24)).astype(np.float32))
    out = tmp_path / "scores"
    assert main(["--input", str(folder), "--model-run", str(tiny_run), "--runs-dir", str(tmp_path / "runs"), "--out", str(out),
                 "--no-progress", "--no-track", "--items-per-chunk", "1"]) == 0
    df, bad = read_output(out), read_quarantine(out)
    assert len(df) == 1 and len(bad) == 1 and "every voxel is 0: a blank image" in bad["reason"].iloc[0]
    assert "blank.nii.gz" not in bad["reason"].iloc[0]  # the reason names the content id, never the file name


def test_a_dicom_series_of_another_modality_than_the_model_is_refused(tiny_run, tmp_path, capsys, dicom_writer):
    """A CT series given to the brain MRI model (its intensities normalised as MRI) was segmented silently; the
    series says what it is (Modality CT)."""
    from domains.medical.infer import main
    from domains.medical.io import load_volume
    from domains.medical.predict import Segmenter

    data = (np.random.default_rng(0).normal(100, 10, (40, 40, 24))).astype(np.int16)
    ct = dicom_writer(tmp_path / "ct", data, spacing=(4.0, 4.0, 4.0), modality="CT")
    runs = tmp_path / "runs"
    rc = main(["--input", str(ct), "--model-run", str(tiny_run), "--runs-dir", str(runs), "--no-track"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert rc == 2 and len(err) == 1 and "a CT scan (DICOM Modality CT), but this model was trained on MRI" in err[0], err
    assert not (runs / "medical").exists()
    seg = Segmenter.from_run(tiny_run)
    with pytest.raises(MedicalInputError, match="trained on MRI"):  # every path through the segmenter (score, evaluate, the dashboard)
        seg.segment(load_volume(ct))
    mr = dicom_writer(tmp_path / "mr", data, spacing=(4.0, 4.0, 4.0), modality="MR")
    assert seg.segment(load_volume(mr)).mask.shape == (40, 40, 24)  # an MR series is segmented


def test_a_dicom_series_converted_to_nifti_keeps_its_modality_for_the_check(tmp_path, dicom_writer):
    """The dashboard converts an uploaded series to NIfTI before segmenting it (the raw files carry the patient's
    name): the series' Modality travels in the NIfTI (descrip ``modality=CT``) and load_volume reads it back, so
    check_modality refuses a converted CT series as it refuses the series itself. A mask written like it is no scan."""
    from domains.medical.io import load_volume, save_mask_like, save_volume_nifti  # what api.dicom_to_nifti does
    from domains.medical.validation import check_modality

    data = np.random.default_rng(0).normal(100, 10, (12, 10, 6)).astype(np.int16)
    for modality, kind in (("CT", "CT"), ("MR", "MR")):
        nii = save_volume_nifti(load_volume(dicom_writer(tmp_path / modality, data, spacing=(4.0, 4.0, 4.0), modality=modality)),
                                tmp_path / f"{modality}.nii.gz")
        vol = load_volume(nii)
        assert vol.modality == kind and vol.format == "nifti"
    with pytest.raises(MedicalInputError, match=r"a CT scan \(DICOM Modality CT\), but this model was trained on MRI"):
        check_modality(load_volume(tmp_path / "CT.nii.gz").modality, "MRI", tmp_path / "CT.nii.gz")
    check_modality(load_volume(tmp_path / "MR.nii.gz").modality, "MRI", tmp_path / "MR.nii.gz")
    mask = save_mask_like(np.zeros(data.shape, np.uint8), load_volume(tmp_path / "CT.nii.gz"), tmp_path / "mask.nii.gz")
    assert load_volume(mask).modality is None
    plain = _volume(tmp_path / "plain.nii.gz", data.astype(np.float32))  # a NIfTI that does not say: not judged, as before
    assert load_volume(plain).modality is None
