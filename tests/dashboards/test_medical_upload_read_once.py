"""The medical page reads an uploaded scan's voxels once: the pre-model check (``api.check_scan``, what ``infer``
refuses before loading a model) hands the volume it read to the segmentation, as ``infer`` passes its checked
volume on. The page used to read the file a second time inside ``predict``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from streamlit.testing.v1 import AppTest


def _nifti_bytes(data: np.ndarray, spacing: float = 4.0) -> bytes:
    import nibabel as nib

    return nib.Nifti1Image(data, np.diag([spacing, spacing, spacing, 1.0])).to_bytes()


def _scan() -> bytes:
    rng = np.random.default_rng(0)
    body = np.linalg.norm(np.indices((40, 40, 24)).T - [12, 20, 20], axis=-1).T < 15
    return _nifti_bytes((rng.normal(100, 10, body.shape) * body).astype(np.float32))


def test_check_scan_hands_its_volume_to_predict_so_the_file_is_read_once(medical_run, tmp_path, monkeypatch):
    from domains.medical import api
    from domains.medical import io as mio

    src = tmp_path / "scan.nii"
    src.write_bytes(_scan())
    reads = []
    real = mio._load_nifti
    monkeypatch.setattr(mio, "_load_nifti", lambda p, **kw: reads.append(Path(p)) or real(p, **kw))
    scan = api.check_scan(medical_run, src)
    voxels = scan.volume.data.copy()
    model = api.load_segmenter(medical_run)
    from_scan = model.predict(scan)
    assert reads == [src], reads  # the check read it; the segmentation took those voxels
    assert np.array_equal(scan.volume.data, voxels)  # and left them as they were (the page segments them again per switch)
    from_path = model.predict(src)  # a path is still read (prepared cases), and gives the same result
    assert len(reads) == 2 and np.array_equal(from_path.mask, from_scan.mask) and np.array_equal(from_path.image, from_scan.image)
    assert scan.shape == (40, 40, 24) and scan.spacing == (4.0, 4.0, 4.0)


def test_the_page_reads_an_uploaded_scan_once(medical_run, tmp_path, monkeypatch):
    import streamlit as st

    from domains.medical import io as mio

    monkeypatch.setenv("SUITE_RUNS_DIR", str(medical_run.parents[1]))
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))  # the session's upload folder goes under this test's folder
    reads = []
    real = mio._load_nifti
    monkeypatch.setattr(mio, "_load_nifti", lambda p, **kw: reads.append(Path(p).name) or real(p, **kw))
    at = AppTest.from_file(str(Path(__file__).resolve().parents[2] / "dashboards" / "app.py"), default_timeout=120)
    at.run()
    at.switch_page("views/medical.py").run()
    box = at.selectbox(key="medical_run")
    box.set_value(next(o for o in box.options if o.startswith(f"{medical_run.name}  ·"))).run()
    at.radio(key="med_source").set_value("Upload a scan").run()
    st.cache_resource.clear()
    st.cache_data.clear()
    reads.clear()
    at.file_uploader(key="med_upload").upload("scan.nii", _scan(), "application/octet-stream")
    at.run()
    assert not at.exception and not at.error, ([e.message for e in at.exception], [e.value for e in at.error])
    assert any("Slices of" in s.value for s in at.subheader)  # segmented and shown
    assert len(reads) == 1, f"the uploaded scan's voxels were read {len(reads)} times: {reads}"
