"""Fixtures for the medical tests: the real prepared tasks, one tiny real training run shared by
the session, and a synthetic DICOM series carrying patient-identifying tags."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

PHI = {"PatientName": "Doe^Jane^Secret", "PatientID": "PID-998877", "PatientBirthDate": "19710203",
       "AccessionNumber": "ACC-55443322", "InstitutionName": "Hospital Of Nowhere", "ReferringPhysicianName": "Who^Doctor"}


def _prepared(name: str, what: str) -> Path:
    from core.data import prepare
    from domains.medical.data import DATASETS

    try:
        return prepare(next(s for s in DATASETS if s.name == name))
    except FileNotFoundError as e:
        pytest.skip(f"real {what} source not installed: {e}")


@pytest.fixture(scope="session")
def brain_task() -> Path:
    from domains.medical.data import BRAIN_TASK

    return _prepared(BRAIN_TASK, "MRI")


@pytest.fixture(scope="session")
def ct_task() -> Path:
    from domains.medical.data import CT_TASK

    return _prepared(CT_TASK, "CT")


TINY = ["--channels", "8", "16", "32", "--patch", "32", "--num-samples", "2", "--iters-per-epoch", "3", "--max-epochs", "2",
        "--val-every", "1", "--spacing", "4", "--threads", "1"]


@pytest.fixture
def tiny_args() -> list[str]:
    return list(TINY)


@pytest.fixture(scope="session")
def tiny_run(brain_task, session_runs_dir) -> Path:
    """A real (tiny) training run on Colin27 → MNI152, tracked to MLflow, shared by the session."""
    from core.config import parse_config
    from domains.medical.config import TrainConfig
    from domains.medical.train import train

    cfg = parse_config(TrainConfig, ["--runs-dir", str(session_runs_dir), "--name", "tiny", *TINY])
    return train(cfg)


def write_dicom_series(folder: Path, data: np.ndarray, spacing=(0.8, 0.8, 2.0), origin=(-100.0, -120.0, 30.0),
                       phi: dict | None = None, modality: str = "CT") -> Path:
    """Axial int16 series (data in x, y, z order, HU with intercept −1024) with optional PHI tags."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series_uid, study_uid = generate_uid(), generate_uid()
    for k in range(data.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / f"IM{k:04d}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        for tag, val in (phi or {}).items():
            setattr(ds, tag, val)
        ds.Modality = modality
        ds.SeriesInstanceUID, ds.StudyInstanceUID = series_uid, study_uid
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [origin[0], origin[1], origin[2] + k * spacing[2]]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [spacing[1], spacing[0]]  # row spacing, column spacing
        ds.SliceThickness = spacing[2]
        ds.Rows, ds.Columns = data.shape[1], data.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = (data[:, :, k].T.astype(np.int16) + 1024).astype(np.int16).tobytes()
        ds.save_as(str(folder / f"IM{k:04d}.dcm"), enforce_file_format=True)
    return folder


@pytest.fixture
def dicom_writer():
    return write_dicom_series


@pytest.fixture
def phi() -> dict:
    return dict(PHI)
