"""Uploads to the medical page are private and bounded (issue 13.7): real ZIP files (a zip bomb,
hostile entry names, a header that lies), a real DICOM series carrying a patient's name, the
per-session folder under Streamlit's AppTest (0700, removed when the session goes) and the TTL sweep."""

from __future__ import annotations

import gc
import gzip
import io
import os
import stat
import struct
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from dashboards import uploads
from dashboards.uploads import SessionUploads, UploadError, check_upload, extract_zip, materialise, sweep_stale

PATIENT = "DOE^JOHN"


@pytest.fixture
def tmp_root(tmp_path, monkeypatch):
    """Session folders go under this test's own temp folder."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(uploads.tempfile, "tempdir", str(root))
    return root


def zip_bytes(entries: dict[str, bytes], method=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


@pytest.fixture(scope="module")
def zip_bomb() -> bytes:
    """The archive of issue 13.7: about 306 KB that expands to 315 MB (one entry of zeros)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        with zf.open("series/IM0001.dcm", "w", force_zip64=True) as fh:
            block = bytes(1 << 20)
            for _ in range(315):
                fh.write(block)
    return buf.getvalue()


def tree_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


# ---- ZIP limits ------------------------------------------------------------------------------------
def test_the_306_kb_zip_bomb_is_refused_before_anything_is_written(zip_bomb, tmp_path):
    assert len(zip_bomb) < 400 * 1024 and sum(i.file_size for i in zipfile.ZipFile(io.BytesIO(zip_bomb)).infolist()) == 315 * 2**20
    assert check_upload("series.zip", zip_bomb) == ".zip"  # a valid archive...
    with pytest.raises(UploadError, match=r"expands from .* to 315 MB .*zip bombs"):
        extract_zip("series.zip", zip_bomb, tmp_path / "out")  # ...refused by its ratio
    assert not (tmp_path / "out").exists()


def test_the_decompressed_size_limit_is_checked_from_the_directory_first(zip_bomb, tmp_path, monkeypatch):
    monkeypatch.setattr(uploads, "MAX_RATIO", 10**6)  # only the size limit left
    monkeypatch.setattr(uploads, "MAX_EXTRACTED_MB", 100)
    with pytest.raises(UploadError, match="expands to 315 MB; the limit is 100 MB decompressed"):
        extract_zip("series.zip", zip_bomb, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_file_count_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(uploads, "MAX_FILES", 5)
    data = zip_bytes({f"s/{i}.dcm": b"x" for i in range(6)})
    with pytest.raises(UploadError, match="holds 6 files; the limit is 5"):
        extract_zip("series.zip", data, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _lie_about_size(data: bytes, real: int, claimed: int) -> bytes:
    """Rewrite the uncompressed-size fields of the (only) entry: local header and central directory."""
    b = bytearray(data)
    local = b.find(b"PK\x03\x04")
    assert struct.unpack_from("<I", b, local + 22)[0] == real
    struct.pack_into("<I", b, local + 22, claimed)
    central = b.find(b"PK\x01\x02")
    assert struct.unpack_from("<I", b, central + 24)[0] == real
    struct.pack_into("<I", b, central + 24, claimed)
    return bytes(b)


def test_a_header_that_lies_about_the_size_stops_the_extraction(tmp_path):
    real = 4 * 2**20
    data = _lie_about_size(zip_bytes({"s/IM1.dcm": bytes(real)}), real, 1000)
    assert zipfile.ZipFile(io.BytesIO(data)).infolist()[0].file_size == 1000  # passes the directory checks
    with pytest.raises(UploadError, match="series.zip"):
        extract_zip("series.zip", data, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing left, and never more than the declared bytes written


@pytest.mark.parametrize("entry,why", [("series/..", "`..`"), ("../evil.dcm", "`..`"), ("a/../../evil.dcm", "`..`"),
                                       ("/etc/evil.dcm", "absolute path"), ("C:\\evil.dcm", "absolute path")])
def test_entries_with_absolute_or_dotdot_paths_refuse_the_archive(entry, why, tmp_path):
    data = zip_bytes({"series/IM1.dcm": b"dicom", entry: b"x"})
    with pytest.raises(UploadError, match=f"entry `{__import__('re').escape(entry)}` has (an|a) {why}"):
        extract_zip("series.zip", data, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "evil.dcm").exists()


def test_symlink_entries_refuse_the_archive(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("series/IM1.dcm", b"dicom")
        link = zipfile.ZipInfo("series/passwd")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
    with pytest.raises(UploadError, match="symbolic link"):
        extract_zip("series.zip", buf.getvalue(), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_extraction_flattens_to_numbered_private_files(tmp_path):
    data = zip_bytes({f"{PATIENT}/IM1.dcm": b"one", "other/IM1.dcm": b"two", "__MACOSX/._IM1.dcm": b"fork", "dir/": b""})
    out = extract_zip("series.zip", data, tmp_path / "out")
    assert [p.name for p in out] == ["00000.dcm", "00001.dcm"]  # same base name twice: both kept, no entry names
    assert sorted(p.read_bytes() for p in out) == [b"one", b"two"]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in out)
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o700


# ---- the session folder ------------------------------------------------------------------------------
def test_session_folder_is_private_unpredictable_and_removed_on_close(tmp_root):
    a, b = SessionUploads("s1"), SessionUploads("s2")
    assert a.path.parent == tmp_root and a.path != b.path and a.path.name.startswith(uploads.DIR_PREFIX)
    assert len(a.path.name) > len(uploads.DIR_PREFIX) + 6  # a random part
    assert stat.S_IMODE(a.path.stat().st_mode) == 0o700
    p = materialise("scan.nii", b"\x5c\x01" + b"\0" * 400, ".nii", a)
    assert p.parent.parent == a.path and p.name == "scan.nii" and stat.S_IMODE(p.stat().st_mode) == 0o600
    a.close()
    assert not a.path.exists() and b.path.exists()
    path_b = b.path
    del b
    gc.collect()  # the finaliser: a session's state dropped removes its folder
    assert not path_b.exists()


def test_ttl_sweep_removes_stale_folders_and_the_old_shared_one(tmp_root):
    live = SessionUploads("live")
    old = time.time() - 7 * 3600
    os.utime(live.path, (old, old))  # a live session's folder is spared however old
    stale_path, fresh = (Path(tempfile.mkdtemp(prefix=uploads.DIR_PREFIX, dir=tmp_root)) for _ in range(2))  # left by a killed server
    os.utime(stale_path, (old, old))
    legacy = tmp_root / uploads.LEGACY_DIR / "abc"
    legacy.mkdir(parents=True)
    (legacy / "upload.dcm").write_bytes(b"raw dicom with a name")
    removed = sweep_stale(ttl_hours=6, root=tmp_root)
    assert set(removed) == {stale_path, tmp_root / uploads.LEGACY_DIR}
    assert live.path.exists() and fresh.exists() and not stale_path.exists() and not (tmp_root / uploads.LEGACY_DIR).exists()


# ---- DICOM: read at once, raw files gone ---------------------------------------------------------------
def write_dicom_series(folder: Path, data: np.ndarray, spacing=(1.0, 1.0, 2.0), modality: str = "MR") -> list[Path]:
    """An axial int16 series (x, y, z order) whose every file carries the patient's name."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series = generate_uid()
    out = []
    for k in range(data.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.4", generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"{PATIENT.replace('^', '_')}_{k:03d}.dcm"
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.PatientName, ds.PatientID, ds.Modality = PATIENT, "MRN-0042", modality
        ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.SOPClassUID = series, meta.MediaStorageSOPInstanceUID, meta.MediaStorageSOPClassUID
        ds.InstanceNumber, ds.ImagePositionPatient, ds.ImageOrientationPatient = k + 1, [0.0, 0.0, k * spacing[2]], [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness = [spacing[1], spacing[0]], spacing[2]
        ds.Rows, ds.Columns = data.shape[1], data.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelData = data[:, :, k].T.astype(np.int16).tobytes()
        ds.save_as(str(path), enforce_file_format=True)
        out.append(path)
    return out


def all_bytes_under(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in folder.rglob("*") if p.is_file())


def test_a_dicom_zip_becomes_a_volume_and_the_raw_files_are_deleted_at_once(tmp_root, tmp_path):
    medical = pytest.importorskip("domains.medical.api", reason="the medical domain is not importable here")
    vol = np.arange(16 * 12 * 5, dtype=np.int16).reshape(16, 12, 5)
    files = write_dicom_series(tmp_path / "src", vol)
    assert PATIENT.encode() in files[0].read_bytes()
    data = zip_bytes({f"{PATIENT}/{f.name}": f.read_bytes() for f in files})
    su = SessionUploads("s")
    seen_raw: list[list[str]] = []

    def reader(raw: Path, out: Path):
        seen_raw.append(sorted(p.name for p in raw.iterdir()))  # the raw series exists only during the read
        return medical.dicom_to_nifti(raw, out)

    out = materialise("scan.zip", data, check_upload("scan.zip", data), su, dicom_to_nifti=reader)
    assert seen_raw == [[f"{i:05d}.dcm" for i in range(5)]]  # numbered names, not the patient's
    assert out.name == "volume.nii.gz" and [p for p in su.path.rglob("*") if p.is_file()] == [out]
    assert PATIENT.encode() not in all_bytes_under(su.path) and b"MRN-0042" not in all_bytes_under(su.path)
    import nibabel as nib

    img = nib.load(str(out))
    assert img.shape == (16, 12, 5) and np.allclose(np.asarray(img.dataobj), vol)
    assert np.allclose(np.sqrt((img.affine[:3, :3] ** 2).sum(axis=0)), (1.0, 1.0, 2.0))
    # a single slice (.dcm) takes the same path: the reader refuses a one-slice volume, the raw file goes anyway
    one = files[0].read_bytes()
    with pytest.raises(medical.MedicalInputError, match="shorter than"):
        materialise("slice.dcm", one, check_upload("slice.dcm", one), su, dicom_to_nifti=medical.dicom_to_nifti)
    assert PATIENT.encode() not in all_bytes_under(su.path)


def test_raw_dicom_is_deleted_when_reading_fails(tmp_root):
    su = SessionUploads("s")
    data = zip_bytes({"s/IM1.dcm": b"\0" * 128 + b"DICM" + PATIENT.encode()})

    def broken(raw: Path, out: Path):
        assert any(raw.iterdir())
        raise ValueError("not a series")

    with pytest.raises(ValueError, match="not a series"):
        materialise("scan.zip", data, ".zip", su, dicom_to_nifti=broken)
    assert PATIENT.encode() not in all_bytes_under(su.path)


# ---- the same, through Streamlit: a session's folder and the page's message ------------------------
def _upload_page():
    import streamlit as st

    from dashboards.uploads import UploadError, check_upload, materialise, session_uploads

    up = st.file_uploader("Scan", key="up")
    su = session_uploads()
    st.caption(f"dir:{su.path}")
    if up is not None:
        try:
            data = up.getvalue()
            st.caption(f"saved:{materialise(up.name, data, check_upload(up.name, data), su, dicom_to_nifti=lambda raw, out: out.write_bytes(b'nifti'))}")
        except UploadError as e:
            st.error(f"Upload refused: {e}")


def _tiny_nifti() -> bytes:
    import nibabel as nib

    return nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4)).to_bytes()


def _captions(at: AppTest, prefix: str) -> list[str]:
    return [c.value[len(prefix):] for c in at.caption if c.value.startswith(prefix)]


def test_each_session_gets_its_own_folder_removed_when_the_session_ends(tmp_root, zip_bomb):
    at, other = AppTest.from_function(_upload_page), AppTest.from_function(_upload_page)
    at.run()
    other.run()
    (mine,), (theirs,) = _captions(at, "dir:"), _captions(other, "dir:")
    assert mine != theirs and Path(mine).parent == tmp_root and stat.S_IMODE(Path(mine).stat().st_mode) == 0o700
    at.file_uploader(key="up").upload("scan.nii", _tiny_nifti(), "application/octet-stream")
    at.run()
    (saved,) = _captions(at, "saved:")
    assert Path(saved).is_relative_to(mine) and _captions(at, "dir:") == [mine]  # same folder across reruns
    # the zip bomb: one clear message, nothing big written, no traceback
    at.file_uploader(key="up").upload("series.zip", zip_bomb, "application/zip")
    at.run()
    assert not at.exception
    assert any(e.value.startswith("Upload refused: `series.zip` expands from") for e in at.error), [e.value for e in at.error]
    assert tree_bytes(Path(mine)) < 1 << 20
    # `series/..` in an archive: a message, not a crash
    at.file_uploader(key="up").upload("series.zip", zip_bytes({"series/IM1.dcm": b"x", "series/..": b"y"}), "application/zip")
    at.run()
    assert not at.exception and any("`series/..`" in e.value for e in at.error)
    del at
    gc.collect()
    assert not Path(mine).exists() and Path(theirs).exists()


def test_the_app_sweeps_stale_upload_folders_at_start(tmp_root, tmp_path, monkeypatch):
    import streamlit as st

    stale = Path(tempfile.mkdtemp(prefix=uploads.DIR_PREFIX, dir=tmp_root))
    (stale / "scan-0").mkdir()
    (stale / "scan-0" / "scan.nii").write_bytes(b"left by a killed server")
    old = time.time() - (uploads.UPLOAD_TTL_HOURS + 1) * 3600
    os.utime(stale, (old, old))
    fresh = Path(tempfile.mkdtemp(prefix=uploads.DIR_PREFIX, dir=tmp_root))
    monkeypatch.setenv("SUITE_RUNS_DIR", str(tmp_path / "no-runs"))
    st.cache_resource.clear()  # "app start": the hourly sweep has not run in this process yet
    at = AppTest.from_file(str(Path(__file__).resolve().parents[2] / "dashboards" / "app.py"), default_timeout=60)
    at.run()
    assert not at.exception
    assert not stale.exists() and fresh.exists()


@pytest.mark.slow  # the unit tests above cover each rule; this is the whole path through the page
def test_the_medical_page_segments_an_uploaded_dicom_zip_and_keeps_no_raw_dicom(domain_run, medical_upload_page, tmp_root, tmp_path):
    """The whole path on the page: a zipped DICOM series with a patient's name is segmented; what
    stays on disk is the session's NIfTI only; a hostile archive gives a message, not a traceback."""
    run = domain_run("medical")
    rng = np.random.default_rng(0)
    vol = (rng.normal(100, 10, (40, 40, 24)) * (np.linalg.norm(np.indices((40, 40, 24)).T - [12, 20, 20], axis=-1).T < 15)).astype(np.int16)
    files = write_dicom_series(tmp_path / "src", vol, spacing=(4.0, 4.0, 4.0))
    data = zip_bytes({f"{PATIENT}/{f.name}": f.read_bytes() for f in files})
    at = medical_upload_page(run.run_dir, timeout=240)
    at.file_uploader(key="med_upload").upload(f"{PATIENT}.zip", data, "application/zip")
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert any("Slices of `upload`" in s.value for s in at.subheader)
    (session,) = [p for p in tmp_root.iterdir() if p.name.startswith(uploads.DIR_PREFIX)]
    kept = [p for p in session.rglob("*") if p.is_file()]
    assert [p.name for p in kept] == ["volume.nii.gz"] and PATIENT.encode() not in all_bytes_under(session)
    at.file_uploader(key="med_upload").upload("series.zip", zip_bytes({"series/IM1.dcm": files[0].read_bytes(), "series/..": b"x"}), "application/zip")
    at.run()
    assert not at.exception
    assert any(e.value.startswith("Upload refused:") and "`series/..`" in e.value for e in at.error), [e.value for e in at.error]


def _nifti_bytes(data: np.ndarray, spacing: float = 4.0) -> bytes:
    import nibabel as nib

    return nib.Nifti1Image(data, np.diag([spacing, spacing, spacing, 1.0])).to_bytes()


def test_the_medical_page_refuses_in_one_line_what_infer_refuses(domain_run, medical_upload_page, tmp_root, tmp_path):
    """The CLI's refusals reach uploads: a CT series given to the (MRI) model was converted to NIfTI first, so its
    DICOM Modality never reached the check and it was segmented silently; a blank image and float64 intensities
    beyond float32 are refused too. Each: one line naming the upload (not the session's private path), no mask."""
    run = domain_run("medical")
    rng = np.random.default_rng(0)
    body = (np.linalg.norm(np.indices((40, 40, 24)).T - [12, 20, 20], axis=-1).T < 15)
    files = write_dicom_series(tmp_path / "ct", (rng.normal(100, 10, body.shape) * body).astype(np.int16), spacing=(4.0, 4.0, 4.0),
                               modality="CT")
    at = medical_upload_page(run.run_dir, timeout=120)
    uploads_ = {
        "ct.zip": (zip_bytes({f.name: f.read_bytes() for f in files}), "a CT scan (DICOM Modality CT), but this model was trained on MRI"),
        "blank.nii.gz": (gzip.compress(_nifti_bytes(np.full((40, 40, 24), 7.0, np.float32))), "every voxel is 7"),
        "huge.nii": (_nifti_bytes(rng.random((40, 40, 24)) * 1e300), "do not fit float32"),
    }
    for name, (data, expected) in uploads_.items():
        at.file_uploader(key="med_upload").upload(name, data, "application/octet-stream")
        at.run()
        assert not at.exception, [e.message for e in at.exception]
        errors = [e.value.replace("\\", "") for e in at.error]
        assert len(errors) == 1 and errors[0].startswith("Upload refused: the uploaded scan: ") and expected in errors[0], (name, errors)
        assert str(tmp_root) not in errors[0] and not at.expander
        assert not any("Slices of" in s.value for s in at.subheader), name  # no mask shown


# ---- hostile names and declared sizes --------------------------------------------------------------
def _nifti_header(shape: tuple[int, ...]) -> bytes:
    import nibabel as nib

    img = nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4))
    img.header.set_data_shape(shape)
    return img.header.binaryblock + b"\0" * 4


def test_a_nifti_gz_declaring_a_huge_volume_is_refused_before_it_is_inflated():
    bomb = gzip.compress(_nifti_header((1000, 1000, 1000)))  # 3.7 GB of voxels declared in 1 kB
    with pytest.raises(UploadError, match=r"declares a 1000×1000×1000 volume of 3815 MB .* the limit is 1024 MB"):
        check_upload("scan.nii.gz", bomb)
    with pytest.raises(UploadError, match="declares a 1000×1000×1000 volume"):
        check_upload("scan.nii", _nifti_header((1000, 1000, 1000)))
    with pytest.raises(UploadError, match="damaged NIfTI header"):
        check_upload("scan.nii.gz", gzip.compress(b"\x5c\x01" + b"\0" * 400))
    with pytest.raises(UploadError, match="too short"):
        check_upload("scan.nii.gz", gzip.compress(b"x" * 100))
    assert check_upload("scan.nii.gz", gzip.compress(_nifti_header((64, 64, 64)))) == ".nii.gz"


def test_an_uploads_name_cannot_break_out_of_its_code_span():
    with pytest.raises(UploadError) as e:
        check_upload("a`[x](http://evil.example)`\nb.nii", b"x" * 400)
    msg = str(e.value)
    assert msg.startswith("`a'[x](http://evil.example)' b.nii` is not a NIfTI file") and msg.count("`") == 2, msg
    with pytest.raises(UploadError) as e:
        check_upload("a" * 500 + ".nii", b"x" * 400)
    assert len(str(e.value)) < 250 and "…`" in str(e.value)


def test_the_medical_page_refuses_a_bad_uploaded_label_in_one_line_and_still_segments_the_scan(domain_run, medical_upload_page, tmp_root):
    """A label the medical code refuses (non-integer values, 4D) showed "Reading the label failed: …" with a details
    expander and the session's private temp path; it is now one line naming "the uploaded label", as the scan's refusals."""
    run = domain_run("medical")
    rng = np.random.default_rng(0)
    body = (np.linalg.norm(np.indices((40, 40, 24)).T - [12, 20, 20], axis=-1).T < 15)
    scan = _nifti_bytes((rng.normal(100, 10, body.shape) * body).astype(np.float32))
    at = medical_upload_page(run.run_dir, timeout=120)
    at.file_uploader(key="med_upload").upload("scan.nii", scan, "application/octet-stream")
    labels = {
        "fractional.nii": (_nifti_bytes(body * np.float32(0.5)), "label volume holds non-integer values; expected integer class ids"),
        "series.nii": (_nifti_bytes(np.stack([body, body], -1).astype(np.uint8)), "expected a 3D volume, got 4D data"),
    }
    for name, (data, expected) in labels.items():
        at.file_uploader(key="med_upload_label").upload(name, data, "application/octet-stream")
        at.run()
        assert not at.exception, [e.message for e in at.exception]
        errors = [e.value.replace("\\", "") for e in at.error]
        assert len(errors) == 1 and errors[0].startswith("Upload refused: the uploaded label: ") and expected in errors[0], (name, errors)
        assert str(tmp_root) not in errors[0] and not [x for x in at.expander if x.label == "Details for a bug report"], name
        assert any("Slices of" in s.value for s in at.subheader), name  # the scan is still segmented and shown
        assert any("The label could not be used" in c.value for c in at.caption), name


def test_the_medical_page_refuses_an_upload_before_it_loads_the_model(domain_run, medical_upload_page, tmp_root, tmp_path, monkeypatch):
    """The CLI refuses a bad input before it loads the model; the page loaded the model first (seconds, a model's
    memory) and only then refused a blank image, a CT series for an MRI model or 4D data. Now those are refused (4D data
    now asks which volume to segment)
    from the run's task.json alone: the model loader is not called until a scan it can segment arrives."""
    import streamlit as st

    from domains.medical import api

    run = domain_run("medical")
    loads = []
    real_load = api.load_segmenter
    monkeypatch.setattr(api, "load_segmenter", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    rng = np.random.default_rng(0)
    body = (np.linalg.norm(np.indices((40, 40, 24)).T - [12, 20, 20], axis=-1).T < 15)
    ct = write_dicom_series(tmp_path / "ct", (rng.normal(100, 10, body.shape) * body).astype(np.int16), spacing=(4.0, 4.0, 4.0), modality="CT")
    refused = {
        "blank.nii.gz": (gzip.compress(_nifti_bytes(np.full((40, 40, 24), 7.0, np.float32))), "every voxel is 7"),
        "ct.zip": (zip_bytes({f.name: f.read_bytes() for f in ct}), "but this model was trained on MRI"),
    }
    at = medical_upload_page(run.run_dir, timeout=120)  # the page opens on a prepared case, which it segments
    st.cache_resource.clear()
    loads.clear()
    for name, (data, expected) in refused.items():
        at.file_uploader(key="med_upload").upload(name, data, "application/octet-stream")
        at.run()
        assert not at.exception, [e.message for e in at.exception]
        errors = [e.value.replace("\\", "") for e in at.error]
        assert len(errors) == 1 and errors[0].startswith("Upload refused: the uploaded scan: ") and expected in errors[0], (name, errors)
        assert not loads, f"{name}: the model was loaded before the upload was refused"
    # 4D data is no longer refused: the page asks which volume (test_medical_upload_choose.py) — still without the model
    at.file_uploader(key="med_upload").upload("series.nii", _nifti_bytes(np.stack([body, body], -1).astype(np.float32)), "application/octet-stream")
    at.run()
    assert not at.exception and not at.error and not loads, [e.value for e in at.error]
    assert [len(b.options) for b in at.selectbox if (b.key or "").startswith("med_volume_")] == [2]
    at.file_uploader(key="med_upload").upload("scan.nii", _nifti_bytes((rng.normal(100, 10, body.shape) * body).astype(np.float32)),
                                              "application/octet-stream")
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert len(loads) == 1 and any("Slices of" in s.value for s in at.subheader)  # a scan it can segment: loaded once, segmented
