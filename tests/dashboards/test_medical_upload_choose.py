"""An upload holding several scans — a 4D NIfTI (time points, an MSD image's channels) or a ZIP of a DICOM export with a
localizer beside the axial series — was only refused on the medical page, with a message naming the CLI's
``--volume`` / ``--series`` flags and no way to pick one there. The page now lists the volumes / series (as ``infer``
lists them: no patient field, no series description) in a selectbox and segments the one chosen, read by the same
library reader as ``infer --volume`` / ``--series``. Built from the bundled MNI152 (the tiny run's own task, MRI)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

REPO = Path(__file__).resolve().parents[2]
BRAIN = REPO / "datasets/data/msd-brain-aal/imagesTs/mni152.nii.gz"
PATIENT = "DOE^JANE"


@pytest.fixture(scope="module")
def brain() -> tuple[np.ndarray, np.ndarray]:
    """The bundled MNI152 T1, every 4th voxel (4 mm, the tiny run's spacing): (voxels, affine)."""
    if not BRAIN.is_file():
        pytest.skip(f"{BRAIN} is not prepared (python -m core.data prepare medical)")
    img = nib.load(BRAIN)
    aff = img.affine.copy()
    aff[:3, :3] *= 4
    return np.asarray(img.dataobj)[::4, ::4, ::4].astype(np.float32), aff


@pytest.fixture
def page(medical_run, medical_upload_page, tmp_path, monkeypatch):
    """The medical page on the tiny run, "Upload a scan" chosen; the session's upload folder under ``tmp_path/up``."""
    import streamlit as st

    monkeypatch.setenv("SUITE_RUNS_DIR", str(medical_run.parents[1]))
    (tmp_path / "up").mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "up"))
    st.cache_resource.clear()
    st.cache_data.clear()
    return medical_upload_page(medical_run, timeout=120)


def _ok(at: AppTest) -> None:
    assert not at.exception and not at.error, ([e.message for e in at.exception], [e.value for e in at.error])


def _shown(at: AppTest) -> list[str]:
    return [s.value for s in at.subheader if s.value.startswith("Slices of")]


def test_a_4d_nifti_upload_offers_its_volumes_and_segments_the_one_chosen(page, brain, tmp_path):
    t1, aff = brain
    series = np.stack([t1, 0.5 * t1 + 40, np.sqrt(t1) * 10], axis=-1)  # three different volumes, int16 on disk, scaled
    img = nib.Nifti1Image(np.round(series / 0.5).astype(np.int16), aff)
    img.header.set_slope_inter(0.5, 3.0)
    page.file_uploader(key="med_upload").upload("fmri.nii.gz", _gz(img), "application/gzip")
    page.run()
    _ok(page)  # not refused any more
    pick = page.selectbox(key=next(k for k in _keys(page) if k.startswith("med_volume_")))
    assert pick.options == ["volume 0 of 0..2", "volume 1 of 0..2", "volume 2 of 0..2"] and pick.value is None
    assert not _shown(page)  # nothing segmented before a choice
    pick.set_value(1).run()
    _ok(page)
    (shown,) = _shown(page)
    assert "`upload-volume-1`" in shown and f"shape {t1.shape}" in shown, shown
    (written,) = (tmp_path / "up").rglob("volume-1.nii.gz")
    expected = (np.round(series / 0.5).astype(np.int16)[..., 1] * 0.5 + 3.0).astype(np.float32)  # volume 1, scaled
    np.testing.assert_array_equal(np.asarray(nib.load(written).dataobj), expected)
    assert nib.load(written).shape == t1.shape and np.allclose(nib.load(written).affine, aff)


def _gz(img) -> bytes:
    import gzip

    return gzip.compress(img.to_bytes(), compresslevel=1)


def _keys(at: AppTest) -> list[str]:
    return [s.key for s in at.selectbox if s.key]


def _dicom_series(data: np.ndarray, number: int, image_type: list[str], origin: tuple[float, float, float], prefix: str) -> dict[str, bytes]:
    """One MR series (x, y, z order, 4 mm) as {zip entry name: DICOM bytes}; every file carries a patient's name."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    uid, out = generate_uid(), {}
    for k in range(data.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.4", generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset("x.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
        ds.PatientName, ds.PatientID, ds.SeriesDescription, ds.Modality = PATIENT, "MRN-0042", f"{PATIENT} head", "MR"
        ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.SOPClassUID = uid, meta.MediaStorageSOPInstanceUID, meta.MediaStorageSOPClassUID
        ds.SeriesNumber, ds.ImageType, ds.InstanceNumber = number, image_type, k + 1
        ds.ImagePositionPatient, ds.ImageOrientationPatient = [origin[0], origin[1], origin[2] + 4.0 * k], [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness = [4.0, 4.0], 4.0
        ds.Rows, ds.Columns = data.shape[1], data.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelData = data[:, :, k].T.astype(np.int16).tobytes()
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        out[f"{PATIENT}/{prefix}{k:03d}.dcm"] = buf.getvalue()
    return out


def _count_dicom_reads(monkeypatch) -> dict[str, int]:
    """pydicom.dcmread calls per file name (the page runs in this process)."""
    import pydicom

    reads: dict[str, int] = {}
    real = pydicom.dcmread

    def spy(fp, *args, **kwargs):
        reads[Path(str(fp)).name] = reads.get(Path(str(fp)).name, 0) + 1
        return real(fp, *args, **kwargs)

    monkeypatch.setattr(pydicom, "dcmread", spy)
    return reads


def test_a_dicom_zip_of_two_series_offers_them_without_patient_fields_and_segments_the_one_chosen(page, brain, tmp_path, monkeypatch):
    t1, _ = brain
    axial = np.round(t1).astype(np.int16)
    entries = {**_dicom_series(axial, 2, ["ORIGINAL", "PRIMARY", "AXIAL"], (-90.0, -126.0, -72.0), "AX"),
               **_dicom_series(axial[:, :, 20:23], 1, ["ORIGINAL", "PRIMARY", "LOCALIZER"], (-90.0, -126.0, 8.0), "LOC")}
    gap = _dicom_series(axial[:, :, 10:16], 7, ["ORIGINAL", "PRIMARY", "AXIAL"], (-90.0, -126.0, -32.0), "GAP")
    del gap[f"{PATIENT}/GAP002.dcm"]  # a series missing a slice: refused alone, the others still offered
    entries.update(gap)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    page.file_uploader(key="med_upload").upload(f"{PATIENT}.zip", buf.getvalue(), "application/zip")
    reads = _count_dicom_reads(monkeypatch)
    page.run()
    _ok(page)  # not refused any more
    # each file's header parsed once for the plain read, the listing and the three series' conversions (was N + 2 = 5 times)
    assert len(reads) == len(entries) and set(reads.values()) == {1}, reads  # (extracted under numbered names)
    pick = page.selectbox(key=next(k for k in _keys(page) if k.startswith("med_series_")))
    assert pick.value is None and len(pick.options) == 3 and not _shown(page)
    big, holed, loc = pick.options
    assert "(5 slice(s)" in holed and "SeriesNumber 7" in holed
    assert big.startswith("series-") and f"({axial.shape[2]} slice(s) of {axial.shape[1]}x{axial.shape[0]}, MR, SeriesNumber 2)" in big
    assert "(3 slice(s)" in loc and "LOCALIZER" in loc and "SeriesNumber 1" in loc
    assert not any("DOE" in o or "MRN" in o or "head" in o for o in pick.options)  # no patient field, no SeriesDescription
    session = tmp_path / "up"
    assert not [p for p in session.rglob("*") if p.is_file() and p.suffix == ".dcm"]  # the raw files are gone already
    assert PATIENT.encode() not in b"".join(p.read_bytes() for p in session.rglob("*") if p.is_file())
    pick.set_value(big).run()
    _ok(page)
    (shown,) = _shown(page)
    series_id = big.split(" ", 1)[0]
    assert f"`upload-{series_id}`" in shown and f"shape {axial.shape}" in shown, shown
    (written,) = session.rglob(f"{series_id}.nii.gz")
    np.testing.assert_array_equal(np.asarray(nib.load(written).dataobj), axial.astype(np.float32))  # the axial series, whole
    pick = page.selectbox(key=pick.key)
    pick.set_value(loc).run()  # the other one, read alone too: the localizer's three slices, as infer --series reads them
    _ok(page)
    (shown,) = _shown(page)
    assert f"`upload-{loc.split(' ', 1)[0]}`" in shown and f"shape {axial.shape[:2] + (3,)}" in shown, shown
    pick = page.selectbox(key=pick.key)
    pick.set_value(holed).run()  # the series missing a slice: refused as infer --series refuses it, in one line, nothing shown
    assert not page.exception and not _shown(page), [e.message for e in page.exception]
    (error,) = [e.value.replace("\\", "") for e in page.error]
    assert error.startswith("Upload refused: the uploaded scan: 1 slice(s) missing") and str(session) not in error and "\n" not in error, error


def test_a_label_zip_of_two_series_is_refused_in_the_pages_words(page, brain, monkeypatch):
    """An uploaded LABEL that is a ZIP of several series was refused in the reader's words for the command line ("pick one
    with --series series-<hash> or --series <SeriesNumber> (infer)"), naming no control of the page; the page now says what
    to upload instead (one line, series named by technical tags only), and the scan uploader says a ZIP may hold several."""
    t1, aff = brain
    assert "one or more series" in page.file_uploader(key="med_upload").label
    page.file_uploader(key="med_upload").upload("scan.nii.gz", _gz(nib.Nifti1Image(t1, aff)), "application/gzip")
    lab = np.zeros(t1.shape, dtype=np.int16)
    lab[10:20, 10:20, 10:20] = 1
    entries = {**_dicom_series(lab, 2, ["ORIGINAL", "PRIMARY", "AXIAL"], (-90.0, -126.0, -72.0), "AX"),
               **_dicom_series(lab[:, :, 20:23], 1, ["ORIGINAL", "PRIMARY", "LOCALIZER"], (-90.0, -126.0, 8.0), "LOC")}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    page.file_uploader(key="med_upload_label").upload("label.zip", buf.getvalue(), "application/zip")
    reads = _count_dicom_reads(monkeypatch)
    page.run()
    assert set(reads.values()) == {1}, reads  # the read and the listing share one parse of each file (was 2)
    assert not page.exception, [e.message for e in page.exception]
    (error,) = [e.value.replace("\\", "") for e in page.error]
    assert error.startswith("Upload refused: the uploaded label holds 2 DICOM series (series-"), error
    assert "LOCALIZER" in error and error.endswith("a label is one volume: upload a ZIP of its series alone"), error
    assert "--series" not in error and "infer" not in error and "\n" not in error, error
    assert PATIENT.split("^")[0] not in error and "MRN" not in error, error


def test_a_dicom_zip_of_a_dual_echo_series_offers_its_echoes_and_segments_the_one_chosen(page, brain, tmp_path):
    """A dual-echo MR series (both echoes' images at every slice position, one series) was refused with the command line's
    '--volume' words; the page offers its volumes as it offers several series, each read as `infer --volume` reads it."""
    import pydicom

    t1, _ = brain
    echoes = [np.round(t1).astype(np.int16), np.round(0.5 * t1 + 30).astype(np.int16)]
    entries, uid = {}, None
    for e, data in enumerate(echoes, start=1):
        for name, raw in _dicom_series(data, 4, ["ORIGINAL", "PRIMARY", "AXIAL"], (-90.0, -126.0, -72.0), f"E{e}-").items():
            ds = pydicom.dcmread(io.BytesIO(raw))
            uid = uid or ds.SeriesInstanceUID
            ds.SeriesInstanceUID, ds.EchoNumbers, ds.InstanceNumber = uid, e, int(ds.InstanceNumber) + 1000 * e
            buf = io.BytesIO()
            ds.save_as(buf, enforce_file_format=True)
            entries[name] = buf.getvalue()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    page.file_uploader(key="med_upload").upload("echoes.zip", buf.getvalue(), "application/zip")
    page.run()
    _ok(page)  # was refused: "... pick one with --volume 0..1 (in EchoNumbers order; infer, score) ..."
    pick = page.selectbox(key=next(k for k in _keys(page) if k.startswith("med_series_")))
    assert "DICOM volumes" in pick.label and len(pick.options) == 2 and pick.value is None, (pick.label, pick.options)
    assert pick.options[0].endswith(": volume 0 of 0..1") and pick.options[1].endswith(": volume 1 of 0..1"), pick.options
    assert not any("DOE" in o or "MRN" in o for o in pick.options)
    pick.set_value(pick.options[1]).run()
    _ok(page)
    (shown,) = _shown(page)
    assert "-volume-1`" in shown and f"shape {t1.shape}" in shown, shown
    (written,) = (tmp_path / "up").rglob("*-volume-1.nii.gz")
    np.testing.assert_array_equal(np.asarray(nib.load(written).dataobj), echoes[1].astype(np.float32))  # the second echo, whole
