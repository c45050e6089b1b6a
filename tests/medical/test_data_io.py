"""Data: prepared MSD tasks from real volumes, user MSD folders, the online MSD download path
(served from 127.0.0.1), and geometry-exact reading of NIfTI / NRRD / DICOM."""

from __future__ import annotations

import functools
import http.server
import json
import tarfile
import threading
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from domains.medical.data import BRAIN_CLASSES, download_msd_task, read_msd_task
from domains.medical.io import load_volume, save_mask_like
from domains.medical.validation import MedicalInputError


def test_brain_task_is_msd_with_four_classes_and_heldout_labels(brain_task):
    task = read_msd_task(brain_task)
    assert task.modality == "MRI" and task.class_names == BRAIN_CLASSES
    assert [Path(c["image"]).name for c in task.training] == ["colin27.nii.gz"]
    assert [Path(c["image"]).name for c in task.test] == ["mni152.nii.gz"]
    for case in task.training + task.test:
        img, lab = load_volume(case["image"]), load_volume(case["label"], dtype=None)
        assert img.shape == lab.shape and np.allclose(img.affine, lab.affine)
        counts = np.bincount(lab.data.astype(int).ravel(), minlength=5)
        assert len(counts) == 5 and (counts[1:] > 20000).all(), counts  # 4 real foreground classes on both volumes
        # labels live inside the brain of *that* image (filled per image, not copied blindly)
        assert (img.data[lab.data > 0] > 0).mean() > 0.97
    # MNI152 and Colin27 are different images on different grids
    a, b = load_volume(task.training[0]["image"]), load_volume(task.test[0]["image"])
    assert a.shape != b.shape


def test_ct_task_in_hounsfield_units_with_heldout_slab(ct_task):
    task = read_msd_task(ct_task)
    assert task.modality == "CT" and task.class_names == ["background", "soft_tissue", "bone"]
    tr, ts = load_volume(task.training[0]["image"]), load_volume(task.test[0]["image"])
    assert tr.data.min() <= -1000 and tr.data.max() > 1500  # air and dense bone in HU
    np.testing.assert_allclose(tr.spacing, (0.957, 0.957, 1.5), atol=1e-3)
    # the two slabs are adjacent, not overlapping: test slab ends where the training slab starts
    assert ts.affine[2, 3] + ts.shape[2] * 1.5 == pytest.approx(tr.affine[2, 3])
    lab = load_volume(task.training[0]["label"], dtype=None).data
    assert set(np.unique(lab)) == {0, 1, 2}
    assert (tr.data[lab == 2] >= 226).all()  # bone = InVesalius' bone threshold


def _tiny_msd(root: Path, name="Task99_Tiny") -> Path:
    d = root / name
    rng = np.random.default_rng(0)
    for split in ("imagesTr", "labelsTr", "imagesTs"):
        (d / split).mkdir(parents=True)
    for i in range(2):
        img = rng.normal(size=(12, 10, 8)).astype(np.float32)
        lab = np.zeros((12, 10, 8), np.uint8)
        lab[3:8, 2:6, 2:5] = 1
        nib.save(nib.Nifti1Image(img, np.diag([1.5, 1.5, 2.0, 1])), str(d / "imagesTr" / f"case_{i}.nii.gz"))
        nib.save(nib.Nifti1Image(lab, np.diag([1.5, 1.5, 2.0, 1])), str(d / "labelsTr" / f"case_{i}.nii.gz"))
    nib.save(nib.Nifti1Image(img, np.diag([1.5, 1.5, 2.0, 1])), str(d / "imagesTs" / "case_9.nii.gz"))
    (d / "dataset.json").write_text(json.dumps({
        "name": "Tiny", "modality": {"0": "CT"}, "labels": {"0": "background", "1": "spleen"},
        "training": [{"image": f"./imagesTr/case_{i}.nii.gz", "label": f"./labelsTr/case_{i}.nii.gz"} for i in range(2)],
        "test": ["./imagesTs/case_9.nii.gz"]}))
    return d


def test_user_msd_folder_is_read_like_task09(tmp_path):
    task = read_msd_task(_tiny_msd(tmp_path))
    assert task.modality == "CT" and task.class_names == ["background", "spleen"]
    assert len(task.training) == 2 and task.test[0]["label"] is None


@pytest.mark.parametrize("breakage, expected", [
    (lambda d: (d / "dataset.json").unlink(), "no dataset.json"),
    (lambda d: (d / "labelsTr" / "case_1.nii.gz").unlink(), "does not exist"),
    (lambda d: (d / "dataset.json").write_text("{not json"), "not valid JSON"),
    (lambda d: (d / "dataset.json").write_text(json.dumps({"labels": {"0": "bg", "2": "x"}, "training": []})), "must be 0..1"),
])
def test_broken_msd_folders_are_named(tmp_path, breakage, expected):
    d = _tiny_msd(tmp_path)
    breakage(d)
    with pytest.raises(MedicalInputError, match=expected):
        read_msd_task(d)


def test_msd_download_path_against_local_http_server(tmp_path):
    src = _tiny_msd(tmp_path / "src", "Task09_Spleen")
    archive = tmp_path / "www" / "Task09_Spleen.tar"
    archive.parent.mkdir()
    with tarfile.open(archive, "w") as tf:
        tf.add(src, arcname="Task09_Spleen")
    import hashlib

    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(archive.parent))
    handler.log_message = lambda *a, **k: None
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/Task09_Spleen.tar"
        with pytest.raises(MedicalInputError, match="md5"):
            download_msd_task("Task09_Spleen", tmp_path / "bad", url=url, md5="0" * 32)
        out = download_msd_task("Task09_Spleen", tmp_path / "data", url=url, md5=md5)
        task = read_msd_task(out)
        assert task.class_names == ["background", "spleen"] and len(task.training) == 2
        assert download_msd_task("Task09_Spleen", tmp_path / "data", url=url + ".gone") == out  # reused, no download
        with pytest.raises(MedicalInputError, match="cannot download"):
            download_msd_task("Task09_Spleen", tmp_path / "other", url=url + ".gone")
    finally:
        srv.shutdown()


def _oblique_affine():
    th = 0.3
    rot = np.array([[np.cos(th), -np.sin(th), 0], [np.sin(th), np.cos(th), 0], [0, 0, 1]])
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag([0.9, 1.1, 2.5]) @ np.diag([-1, 1, 1])
    aff[:3, 3] = [12.5, -40.0, 7.0]
    return aff


def test_nifti_mask_keeps_exact_geometry(tmp_path):
    aff = _oblique_affine()
    data = np.random.default_rng(0).normal(size=(20, 18, 9)).astype(np.float32)
    img = nib.Nifti1Image(data, aff)
    img.set_qform(aff, code=1)
    img.set_sform(aff, code=2)
    nib.save(img, str(tmp_path / "x.nii.gz"))
    vol = load_volume(tmp_path / "x.nii.gz")
    out = save_mask_like((data > 0).astype(np.uint8), vol, tmp_path / "m.nii.gz")
    back = nib.load(str(out))
    assert back.shape == data.shape
    np.testing.assert_array_equal(back.affine, nib.load(str(tmp_path / "x.nii.gz")).affine)
    assert int(back.header["sform_code"]) == 2 and int(back.header["qform_code"]) == 1


def test_nrrd_lps_geometry_is_converted_to_ras(tmp_path):
    import nrrd

    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    nrrd.write(str(tmp_path / "v.nrrd"), data, {"space": "left-posterior-superior", "space directions": np.diag([0.5, 0.7, 1.2]),
                                               "space origin": np.array([10.0, 20.0, -5.0])})
    vol = load_volume(tmp_path / "v.nrrd")
    expected = np.diag([-0.5, -0.7, 1.2, 1.0])
    expected[:3, 3] = [-10.0, -20.0, -5.0]
    np.testing.assert_allclose(vol.affine, expected)
    np.testing.assert_array_equal(vol.data, data)


def test_dicom_series_geometry_and_hu(tmp_path, dicom_writer):
    hu = np.random.default_rng(1).integers(-1000, 2000, size=(16, 12, 7)).astype(np.int16)
    folder = dicom_writer(tmp_path / "series", hu, spacing=(0.8, 0.6, 2.0), origin=(-100.0, -120.0, 30.0))
    (folder / "notes.txt").write_text("not dicom")  # stray files are skipped
    vol = load_volume(folder)
    assert vol.format == "dicom" and vol.modality == "CT" and vol.shape == (16, 12, 7)
    np.testing.assert_array_equal(vol.data, hu.astype(np.float32))  # rescale applied: HU back
    np.testing.assert_allclose(vol.spacing, (0.8, 0.6, 2.0))
    # LPS (DICOM) -> RAS: x and y flip sign, origin too
    np.testing.assert_allclose(vol.affine[:3, 3], (100.0, 120.0, 30.0))
    np.testing.assert_allclose(np.diag(vol.affine)[:3], (-0.8, -0.6, 2.0))


@pytest.mark.parametrize("make, expected", [
    (lambda p: nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 3), np.float32), np.eye(4)), str(p)), "expected a 3D volume, got 4D"),
    (lambda p: nib.save(nib.Nifti1Image(np.zeros((40, 40), np.float32), np.eye(4)), str(p)), "expected a 3D volume, got 2D"),
    (lambda p: p.write_bytes(b"this is a text file, not an image"), "cannot be read as a NIfTI"),
    (lambda p: nib.save(nib.Nifti1Image(np.full((5, 5, 5), np.nan, np.float32), np.eye(4)), str(p)), "NaN"),
    (lambda p: nib.save(nib.Nifti1Image(np.where(np.eye(5)[:, :, None] > 0, np.inf, 0).repeat(5, 2).astype(np.float32), np.eye(4)), str(p)), "inf"),
    (lambda p: nib.save(nib.Nifti1Image(np.zeros((5, 5, 5), np.float32), np.diag([1, 1, 500, 1])), str(p)), "absurd voxel spacing"),
])
def test_bad_volumes_fail_naming_the_file(tmp_path, make, expected):
    p = tmp_path / "bad_input.nii.gz"
    make(p)
    with pytest.raises(MedicalInputError, match=expected) as e:
        load_volume(p)
    assert "bad_input.nii.gz" in str(e.value)


def test_absurd_size_refused_from_header_before_allocation(tmp_path):
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((5000, 5000, 5000))
    hdr.set_data_dtype(np.float32)
    p = tmp_path / "huge.nii"
    with open(p, "wb") as fh:  # header only: the data would be 500 GB
        fh.write(hdr.binaryblock + b"\0" * 4)
    with pytest.raises(MedicalInputError, match="absurd volume size"):
        load_volume(p)


def test_unsupported_suffix_and_missing_path(tmp_path):
    (tmp_path / "scan.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(MedicalInputError, match="not a supported volume"):
        load_volume(tmp_path / "scan.jpg")
    with pytest.raises(MedicalInputError, match="no such file"):
        load_volume(tmp_path / "nothing.nii.gz")


def test_label_checks_geometry_mismatch_and_empty(tmp_path):
    from domains.medical.transforms import LoadVolumed

    img = np.random.default_rng(0).normal(size=(10, 10, 10)).astype(np.float32)
    nib.save(nib.Nifti1Image(img, np.eye(4)), str(tmp_path / "img.nii.gz"))
    nib.save(nib.Nifti1Image(np.ones((10, 10, 10), np.uint8), np.diag([2, 1, 1, 1])), str(tmp_path / "shifted.nii.gz"))
    nib.save(nib.Nifti1Image(np.zeros((10, 10, 10), np.uint8), np.eye(4)), str(tmp_path / "empty.nii.gz"))
    nib.save(nib.Nifti1Image(np.full((10, 10, 10), 7, np.uint8), np.eye(4)), str(tmp_path / "toomany.nii.gz"))
    load = LoadVolumed(num_classes=5)
    with pytest.raises(MedicalInputError, match="shifted.nii.gz: label geometry"):
        load({"image": str(tmp_path / "img.nii.gz"), "label": str(tmp_path / "shifted.nii.gz")})
    with pytest.raises(MedicalInputError, match="empty.nii.gz: label volume is empty"):
        load({"image": str(tmp_path / "img.nii.gz"), "label": str(tmp_path / "empty.nii.gz")})
    with pytest.raises(MedicalInputError, match="toomany.nii.gz: label values span 7..7; expected 0..4"):
        load({"image": str(tmp_path / "img.nii.gz"), "label": str(tmp_path / "toomany.nii.gz")})
