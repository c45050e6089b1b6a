"""A DICOM series' headers are read once per command: ``infer`` (and the dashboard's check) read the folder through
:func:`domains.medical.io.read_input_for_model` — the header check, then the voxels. Each file was parsed twice (the
check's header pass, then the reader's pass with the pixels), the series choice and the decodability check run in both."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest

from domains.medical.io import read_input_for_model

META = {"pipeline": {"spacing": 2.0, "modality": "CT"}}


def _count_reads(monkeypatch) -> Counter:
    reads: Counter = Counter()
    real = pydicom.dcmread

    def spy(fp, *args, **kwargs):
        reads[Path(str(fp)).name] += 1
        return real(fp, *args, **kwargs)

    monkeypatch.setattr(pydicom, "dcmread", spy)
    return reads


def test_infer_reads_each_slice_file_once_and_still_gets_its_voxels(tmp_path, dicom_writer, monkeypatch):
    rng = np.random.default_rng(0)
    hu = rng.integers(-1000, 1500, size=(40, 36, 5)).astype(np.int16)  # 2880 bytes a slice: its pixels are read when used
    folder = dicom_writer(tmp_path / "series", hu, spacing=(1.0, 1.0, 2.0))
    reads = _count_reads(monkeypatch)
    vol = read_input_for_model(folder, META)
    assert dict(reads) == {f.name: 1 for f in folder.iterdir()}  # was 2 a file: the check's header read, then the reader's
    assert vol.shape == hu.shape and np.array_equal(vol.data, hu.astype(np.float32))


def test_picking_one_of_two_series_reads_each_file_once(tmp_path, dicom_writer, monkeypatch):
    rng = np.random.default_rng(1)
    axial = rng.integers(-1000, 1500, size=(40, 36, 5)).astype(np.int16)
    folder = dicom_writer(tmp_path / "both", axial, spacing=(1.0, 1.0, 2.0))
    other = dicom_writer(tmp_path / "other", axial[:, :, :2] + 7, spacing=(1.0, 1.0, 2.0))
    for f in other.iterdir():
        f.rename(folder / f"LOC-{f.name}")
    uid = pydicom.dcmread(folder / "IM0000.dcm", stop_before_pixels=True).SeriesInstanceUID
    import hashlib

    reads = _count_reads(monkeypatch)
    vol = read_input_for_model(folder, META, series="series-" + hashlib.sha256(uid.encode()).hexdigest()[:12])
    assert dict(reads) == {f.name: 1 for f in folder.iterdir()}
    assert np.array_equal(vol.data, axial.astype(np.float32))


def test_the_dashboards_folder_of_several_series_is_listed_and_converted_from_one_read_of_each_file(tmp_path, dicom_writer, monkeypatch):
    """The dashboard's upload of N series read every file N + 2 times: the plain read (refused: several series), the
    listing, then each series' conversion read the whole folder again. ``api.DicomFolder`` reads each file once for all of
    them, with the same listing and the same volumes as the separate calls."""
    from domains.medical import api

    rng = np.random.default_rng(2)
    axial = rng.integers(-1000, 1500, size=(40, 36, 5)).astype(np.int16)
    folder = dicom_writer(tmp_path / "upload", axial, spacing=(1.0, 1.0, 2.0))
    other = dicom_writer(tmp_path / "other", axial[:, :, :3] - 5, spacing=(1.0, 1.0, 2.0))
    for f in other.iterdir():
        f.rename(folder / f"LOC-{f.name}")
    expected = api.dicom_series(folder)  # the separate calls, before counting
    reads = _count_reads(monkeypatch)
    upload = api.DicomFolder(folder)
    with pytest.raises(api.MedicalInputError, match="holds 2 DICOM series"):
        upload.to_nifti(tmp_path / "volume.nii.gz")
    listed = upload.series()
    assert listed == expected and len(listed) == 2
    shapes = [upload.to_nifti(tmp_path / f"{s.id}.nii.gz", series=s.id).shape for s in listed]
    assert dict(reads) == {f.name: 1 for f in folder.iterdir()}  # was 4 a file (N + 2, N = 2 series)
    assert shapes == [axial.shape, axial[:, :, :3].shape]
    import nibabel as nib

    np.testing.assert_array_equal(np.asarray(nib.load(tmp_path / f"{listed[0].id}.nii.gz").dataobj), axial.astype(np.float32))
    np.testing.assert_array_equal(np.asarray(nib.load(tmp_path / f"{listed[1].id}.nii.gz").dataobj), (axial[:, :, :3] - 5).astype(np.float32))
