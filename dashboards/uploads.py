"""Checks on scans uploaded to the medical page, before any reader parses them: the file type
(by name and magic bytes) and its size; then a private temp copy the medical API can read."""

from __future__ import annotations

import hashlib
import io
import tempfile
import zipfile
from pathlib import Path

MAX_UPLOAD_MB = 200
# suffix -> what it is; checked on the name because browsers send arbitrary MIME types for these
ACCEPTED = {".nii": "NIfTI", ".nii.gz": "NIfTI (gzip)", ".nrrd": "NRRD", ".dcm": "DICOM slice",
            ".zip": "ZIP of a DICOM series"}


class UploadError(ValueError):
    pass


def upload_suffix(name: str) -> str:
    low = name.lower()
    for suffix in sorted(ACCEPTED, key=len, reverse=True):
        if low.endswith(suffix):
            return suffix
    raise UploadError(f"`{name}` is not a supported scan: expected one of {', '.join(ACCEPTED)} "
                      f"({', '.join(sorted(set(ACCEPTED.values())))}).")


def check_upload(name: str, data: bytes) -> str:
    """Type and size checks before anything parses the bytes; returns the suffix."""
    suffix = upload_suffix(name)
    if len(data) == 0:
        raise UploadError(f"`{name}` is empty (0 bytes).")
    if len(data) > MAX_UPLOAD_MB * 1024 * 1024:
        raise UploadError(f"`{name}` is {len(data) / 2**20:.0f} MB; the limit is {MAX_UPLOAD_MB} MB.")
    if suffix == ".nii.gz" and data[:2] != b"\x1f\x8b":
        raise UploadError(f"`{name}` is named .nii.gz but is not gzip-compressed data.")
    if suffix == ".nii" and len(data) >= 348 and int.from_bytes(data[:4], "little") not in (348, 540) and int.from_bytes(data[:4], "big") not in (348, 540):
        raise UploadError(f"`{name}` is not a NIfTI file (its header size field is neither 348 nor 540).")
    if suffix == ".nii" and len(data) < 348:
        raise UploadError(f"`{name}` is too short ({len(data)} bytes) to be a NIfTI file.")
    if suffix == ".nrrd" and not data.startswith(b"NRRD"):
        raise UploadError(f"`{name}` is not an NRRD file (it does not start with the `NRRD` magic).")
    if suffix == ".dcm" and (len(data) < 132 or data[128:132] != b"DICM"):
        raise UploadError(f"`{name}` is not a DICOM file (no `DICM` marker at byte 128).")
    if suffix == ".zip" and not zipfile.is_zipfile(io.BytesIO(data)):
        raise UploadError(f"`{name}` is not a valid ZIP archive.")
    return suffix


def materialise(name: str, data: bytes, suffix: str) -> Path:
    """Write an upload to a private temp path the medical API can read (a folder for a DICOM zip)."""
    digest = hashlib.sha1(data).hexdigest()[:16]
    base = Path(tempfile.gettempdir()) / "suite-dashboard-uploads" / digest
    base.mkdir(parents=True, exist_ok=True)
    if suffix == ".zip":
        out = base / "series"
        if not out.is_dir():
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                members = [m for m in zf.infolist() if not m.is_dir()]
                if not members:
                    raise UploadError(f"`{name}` contains no files.")
                for m in members:  # flatten; never trust member paths (zip slip)
                    target = out / Path(m.filename).name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(zf.read(m))
        return out
    path = base / f"upload{suffix}"
    if not path.is_file():
        path.write_bytes(data)
    return path
