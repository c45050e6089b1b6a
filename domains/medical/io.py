"""Reading and writing volumes with their geometry: NIfTI (.nii/.nii.gz), NRRD (.nrrd/.nhdr) and
DICOM series folders, all returned as a :class:`Volume` — a 3D array plus the voxel→world (RAS, mm)
affine — so that every mask we write lands on exactly the input's grid.

DICOM privacy: only a whitelist of technical tags (geometry, modality, rescale) is ever read into
a :class:`Volume`; patient-identifying tags (name, ID, birth date, accession number, …) never
enter our objects, logs, outputs or the tracking store. The volume's ``id`` for a DICOM series is
a hash of the SeriesInstanceUID, never a patient field.

A DICOM series converted to NIfTI (:func:`save_volume_nifti`, the dashboard's uploads) keeps what it
says it is: its Modality goes into the NIfTI ``descrip`` field as ``modality=CT`` / ``modality=MR``,
read back into :attr:`Volume.modality`, so the model's modality check sees the series through the
conversion. Other NIfTI files (no such field) have no modality, as before.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.io import atomic_path
from domains.medical.validation import (MAX_SIDE, MAX_VOXELS, MedicalInputError, check_image_array, check_modality, check_not_blank, check_resampled_size,
                                        check_spacing)

__all__ = ["Volume", "load_volume", "save_mask_like", "volume_id", "is_volume_path", "DICOM_SAFE_TAGS", "IMAGE_SUFFIXES", "probe_volume",
           "check_input", "read_input_for_model", "is_dicom_file", "content_id", "save_volume_nifti"]

IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".dcm")
# The only DICOM attributes we read. Everything else (PatientName, PatientID, PatientBirthDate,
# AccessionNumber, InstitutionName, ReferringPhysicianName, dates, UIDs other than the series one
# we hash) stays in the file.
DICOM_SAFE_TAGS = ("Modality", "Rows", "Columns", "PixelSpacing", "SliceThickness", "ImageOrientationPatient",
                   "ImagePositionPatient", "RescaleSlope", "RescaleIntercept", "InstanceNumber")
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


@dataclass
class Volume:
    """A 3D volume in its own voxel order; ``affine`` maps voxel indices to RAS millimetres."""

    data: np.ndarray
    affine: np.ndarray
    path: str
    format: str  # "nifti" | "nrrd" | "dicom"
    modality: str | None = None  # "CT" / "MR" when the file says so (DICOM, or a NIfTI converted from it), else None
    header: Any = field(default=None, repr=False)  # the NIfTI header, kept to write masks with identical qform/sform
    series_hash: str | None = None  # DICOM: a short hash of SeriesInstanceUID (the UID itself never leaves the reader)

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(s) for s in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.data.shape)

    @property
    def id(self) -> str:
        return volume_id(self.path)

    @property
    def output_id(self) -> str:
        """The name outputs are written under: the file name, or ``series-<hash>`` for a DICOM series
        (a folder name may carry a patient's name; the hash does not). Control characters of a file name (a
        newline, a tab, an escape) become ``_``: they would split the log lines and the printed output paths, and
        make output files a shell script cannot name; spaces and non-ASCII letters are kept."""
        return f"series-{self.series_hash}" if self.format == "dicom" else _CONTROL_CHARS.sub("_", self.id)


def is_volume_path(p: Path) -> bool:
    name = p.name.lower()
    return p.is_dir() or any(name.endswith(s) for s in IMAGE_SUFFIXES)


def volume_id(path: str | Path) -> str:
    """A file-name based id (``case_001.nii.gz`` → ``case_001``); for DICOM folders the folder name."""
    p = Path(path)
    name = p.name
    for s in (".nii.gz", ".nii", ".nrrd", ".nhdr"):
        if name.lower().endswith(s):
            return name[: -len(s)]
    return name


def _dispatch(path: str | Path, dicom, nifti, nrrd):
    """Call the reader for ``path``'s kind (a DICOM series folder, NIfTI, NRRD); refuse anything else,
    and turn a library's parse error into a :class:`MedicalInputError` naming the file."""
    p = Path(path)
    if not p.exists():
        raise MedicalInputError(f"{p}: no such file or folder")
    lower = p.name.lower()
    try:
        if p.is_dir():
            return dicom(p)
        if lower.endswith((".nii", ".nii.gz")):
            return nifti(p)
        if lower.endswith((".nrrd", ".nhdr")):
            return nrrd(p)
        if lower.endswith(".dcm") or is_dicom_file(p):
            raise MedicalInputError(_single_dicom_message(p))
        raise MedicalInputError(f"{p}: not a supported volume (expected .nii, .nii.gz, .nrrd, .nhdr or a DICOM series folder)")
    except MedicalInputError:
        raise
    except Exception as e:  # noqa: BLE001 - a library's parse error becomes a user error naming the file
        raise MedicalInputError(f"{p}: cannot be read as a {_kind(p)} volume ({type(e).__name__}: {str(e)[:200]}){_misnamed_hint(p)}") from None


def _misnamed_hint(p: Path) -> str:
    """A NIfTI file whose name says the opposite of its compression (a renamed file) — say how to fix it."""
    try:
        with open(p, "rb") as fh:
            head = fh.read(348)
    except OSError:
        return ""
    lower = p.name.lower()
    if lower.endswith(".nii") and head[:2] == b"\x1f\x8b":
        return "; the file is gzip-compressed: name it .nii.gz"
    if lower.endswith(".nii.gz") and head[:2] != b"\x1f\x8b" and head[344:347] in (b"n+1", b"ni1"):
        return "; the file is an uncompressed NIfTI: name it .nii"
    return ""


def load_volume(path: str | Path, *, dtype=np.float32, check: bool = True) -> Volume:
    """Load a NIfTI / NRRD file or a DICOM series folder; clear errors for anything else."""
    p = Path(path)
    vol = _dispatch(p, _load_dicom_series, _load_nifti, _load_nrrd)
    if not np.all(np.isfinite(vol.affine)) or abs(np.linalg.det(vol.affine[:3, :3])) < 1e-9:
        raise MedicalInputError(f"{p}: degenerate geometry (voxel-to-world affine is singular or not finite)")
    if check:
        vol.data = check_image_array(vol.data, p, vol.spacing)
    if dtype is not None and vol.data.dtype != dtype:
        src = vol.data
        with np.errstate(over="ignore"):  # an overflow is refused just below, by name
            vol.data = src.astype(dtype)
        if check and np.issubdtype(vol.data.dtype, np.floating) and not np.all(np.isfinite(vol.data)):  # beyond float32's 3.4e38
            raise MedicalInputError(f"{p}: intensities up to {float(np.max(np.abs(src))):.3g} do not fit {np.dtype(dtype).name} (they "
                                    "became infinite); rescale the image to a plausible intensity range")
    return vol


def _single_dicom_message(p: Path) -> str:
    try:
        import pydicom

        frames = _number_of_frames(pydicom.dcmread(str(p), stop_before_pixels=True, specific_tags=["NumberOfFrames"]))
    except Exception:  # noqa: BLE001 - not readable as DICOM: the single-slice message below
        frames = 1
    if frames > 1:
        return (f"{p}: a multi-frame (enhanced) DICOM file ({frames} frames in one file); this reader takes classic single-frame "
                "series (one slice per file, in one folder) — export the series as classic DICOM, or convert it to NIfTI (e.g. dcm2niix)")
    return (f"{p}: a single DICOM file is one slice, not a volume; pass the folder that holds the whole series "
            "(all its slices, one series per folder)")


def is_dicom_file(p: str | Path) -> bool:
    """A file with the DICOM preamble magic ``DICM`` at byte 128 (whatever its name)."""
    try:
        with open(p, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _no_series_message(folder: Path) -> str:
    """Why a folder holds no usable DICOM series — naming the volume files when it holds those instead
    (a common mix-up: a folder of NIfTI files passed where one file or a DICOM series is expected)."""
    vols = [f.name for f in folder.iterdir() if f.is_file() and f.name.lower().endswith((".nii", ".nii.gz", ".nrrd", ".nhdr"))]
    if vols:
        return (f"{folder}: a folder is read as one DICOM series, but this one holds {len(vols)} NIfTI/NRRD file(s); "
                "pass one file, or segment the whole folder with `python -m domains.medical.score --input FOLDER`")
    subs = [f for f in folder.iterdir() if f.is_dir() and not f.name.startswith(".")]
    if subs:  # a DICOM export's patient/study/series tree
        return (f"{folder}: no DICOM image slices at its top level, but {len(subs)} sub-folder(s); a series is read from one folder "
                "holding its slices: pass that folder (score: a folder whose entries are series folders)")
    return f"{folder}: no DICOM image slices with geometry (ImagePositionPatient) found"


def _spacing_of(affine: np.ndarray) -> tuple[float, float, float]:
    return tuple(float(s) for s in np.sqrt((np.asarray(affine, dtype=float)[:3, :3] ** 2).sum(axis=0)))


def probe_volume(path: str | Path) -> tuple[tuple[int, ...], tuple[float, float, float]]:
    """(shape, spacing in mm) from the header alone — nothing is allocated (a DICOM series folder: its
    slices' headers, without pixel data). Raises :class:`MedicalInputError` for what ``load_volume``
    would refuse by its name, header or geometry."""
    return _dispatch(path, _probe_dicom_series, _probe_nifti, _probe_nrrd)


def _check_nifti_forms(img, p: Path) -> None:
    """nibabel (as MONAI's readers) takes the sform whenever its code is set; an sform that is zero, singular or not
    finite read as an 'absurd voxel spacing (0, 0, 0)', even when the qform beside it is a valid geometry. Say which
    form is broken, and that the two disagree."""
    def usable(form) -> bool:  # finite, with non-zero voxel sizes
        return form is not None and bool(np.all(np.isfinite(form))) and abs(np.linalg.det(form[:3, :3])) > 1e-9

    sform, s_code = img.header.get_sform(coded=True)
    if not s_code or sform is None or usable(sform):
        return
    qform, q_code = img.header.get_qform(coded=True)
    q_ok = bool(q_code) and usable(qform)
    raise MedicalInputError(f"{p}: its sform (sform_code {int(s_code)}), the geometry NIfTI readers use first, is singular or not finite"
                            + (f", while its qform (qform_code {int(q_code)}) is a valid geometry: the header contradicts itself; copy the "
                               "qform to the sform (e.g. fslorient -copyqform2sform) or set sform_code to 0, if the qform is right"
                               if q_ok else "; expected a voxel-to-world matrix with non-zero voxel sizes"))


def _probe_nifti(p: Path) -> tuple[tuple[int, ...], tuple[float, float, float]]:
    import nibabel as nib

    img = nib.load(str(p))
    _check_header_shape(img.shape, p)
    _check_nifti_forms(img, p)
    return tuple(int(s) for s in img.shape[:3]), _spacing_of(img.affine)


def _nrrd_spatial_dirs(dirs) -> np.ndarray:
    """The rows of a NRRD ``space directions`` field that are directions: a non-spatial axis (a 4D
    series' list axis) is written ``none``, which pynrrd reads as None or as a row of NaN."""
    rows = [d for d in dirs if d is not None and not np.all(np.isnan(np.asarray(d, dtype=float)))]
    return np.asarray(rows, dtype=float)


def _nrrd_list_axes_to_drop(dirs, shape) -> tuple[int, ...]:
    """The axes to drop from a NRRD of ``shape`` with ``space directions`` ``dirs`` when it is a 3D volume stored with
    non-spatial axes (written ``none``: a one-component list, one time point) of length 1; () otherwise. The probe and
    the reader both use it, so the shape one reports is the shape the other reads."""
    spatial = [d is not None and not np.all(np.isnan(np.asarray(d, dtype=float))) for d in dirs]
    if len(spatial) == len(shape) and sum(spatial) == 3 and all(s or n == 1 for s, n in zip(spatial, shape)):
        return tuple(i for i, s in enumerate(spatial) if not s)
    return ()


def _probe_nrrd(p: Path) -> tuple[tuple[int, ...], tuple[float, float, float]]:
    import nrrd

    hdr = nrrd.read_header(str(p))
    sizes = tuple(int(s) for s in hdr.get("sizes", ()))
    _check_header_shape(sizes, p)
    dirs = hdr.get("space directions")
    if dirs is None:
        return sizes[:3], tuple(float(s) for s in hdr.get("spacings", [1.0, 1.0, 1.0])[:3])
    drop = _nrrd_list_axes_to_drop(dirs, sizes)  # a 3D volume with a one-entry list axis (see _load_nrrd)
    sizes = tuple(n for i, n in enumerate(sizes) if i not in drop)
    dirs = _nrrd_spatial_dirs(dirs)
    return sizes[:3], tuple(float(s) for s in np.sqrt((dirs ** 2).sum(axis=1)))


def _probe_dicom_series(folder: Path) -> tuple[tuple[int, ...], tuple[float, float, float]]:
    import pydicom

    rows = cols = None
    positions, spacing, iop = [], None, None
    for f in sorted(x for x in folder.iterdir() if x.is_file() and not x.name.startswith(".")):
        try:
            ds = pydicom.dcmread(str(f), stop_before_pixels=True, specific_tags=["Rows", "Columns", "PixelSpacing", "ImagePositionPatient",
                                                                                  "ImageOrientationPatient", "SliceThickness", "NumberOfFrames"])
        except Exception:  # noqa: BLE001 - non-DICOM files are skipped, as the reader does
            continue
        _refuse_multiframe(ds, folder)
        if "ImagePositionPatient" not in ds or "Rows" not in ds:
            continue
        if "PixelSpacing" not in ds:
            raise MedicalInputError(f"{folder}: a DICOM slice has no PixelSpacing; cannot place it in space")
        rows, cols = int(ds.Rows), int(ds.Columns)
        spacing = spacing or [float(x) for x in ds.PixelSpacing] + [float(getattr(ds, "SliceThickness", 1.0) or 1.0)]
        iop = iop if iop is not None else np.asarray(ds.ImageOrientationPatient, dtype=float)
        positions.append(np.asarray(ds.ImagePositionPatient, dtype=float))
    if not positions:
        raise MedicalInputError(_no_series_message(folder))
    dz = spacing[2]
    if len(positions) > 1:
        normal = np.cross(iop[:3], iop[3:])
        z = np.sort(np.asarray(positions) @ normal)
        gaps = np.diff(z)
        dz = float(np.median(gaps)) if np.all(gaps > 1e-6) else dz
    shape = (cols, rows, len(positions))
    _check_header_shape(shape, folder)
    return shape, (spacing[1], spacing[0], abs(dz))


def check_input(path: str | Path, target_spacing: float | None = None) -> tuple[tuple[int, ...], tuple[float, float, float]]:
    """Everything about an input that can be refused from its header — name, size, spacing, (with
    the model's ``target_spacing``) the size of the resampled grid, and for NIfTI whether the file can
    hold the data its header declares — before any model or run is created. Returns (shape, spacing)."""
    shape, spacing = probe_volume(path)
    check_spacing(spacing, path)
    if target_spacing is not None and len(shape) >= 3:
        check_resampled_size(shape[:3], spacing, target_spacing, path)
    if Path(path).is_file() and Path(path).name.lower().endswith((".nii", ".nii.gz")):
        import nibabel as nib

        _check_nifti_size(nib.load(str(path)), Path(path))
    return shape, spacing


def read_input_for_model(path: str | Path, meta: dict[str, Any]) -> Volume:
    """The input read and checked for the model a run's ``task.json`` (``meta``) describes — everything refused
    without the model: the header (:func:`check_input`), then the voxels (4D, NaN, a truncated file), a blank
    image, and a DICOM Modality the model was not trained on. ``infer`` and the dashboard call it before
    loading the model."""
    pipeline = meta["pipeline"]
    check_input(path, pipeline["spacing"])
    vol = load_volume(path)
    check_not_blank(vol.data, path)
    check_modality(vol.modality, pipeline.get("modality", meta.get("modality")), path)
    return vol


def content_id(path: str | Path, prefix: str = "vol") -> str:
    """A non-identifying, input-determined id: ``<prefix>-`` + 12 hex digits of the sha256 of the file's
    bytes, or for a folder (a DICOM series) of its files' names, sizes and bytes. Names of the user's
    files or folders (which may be a patient's name or MRN) never enter it in readable form."""
    import hashlib

    p = Path(path)
    h = hashlib.sha256()
    files = [p] if p.is_file() else sorted(x for x in p.rglob("*") if x.is_file()) if p.is_dir() else []
    for f in files:
        if p.is_dir():
            h.update(str(f.relative_to(p)).encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        h.update(b"\0")
    return f"{prefix}-{h.hexdigest()[:12]}"


def _kind(p: Path) -> str:
    lower = p.name.lower()
    return "NIfTI" if ".nii" in lower else "NRRD" if ".nrrd" in lower or ".nhdr" in lower else "DICOM"


def _load_nifti(p: Path) -> Volume:
    import nibabel as nib

    img = nib.load(str(p))
    _check_header_shape(img.shape, p)  # before allocating: a corrupt header can claim terabytes
    _check_nifti_forms(img, p)
    if len(img.shape) >= 3:
        check_spacing(_spacing_of(img.affine), p)
    _check_nifti_size(img, p)
    data = np.asanyarray(img.dataobj)
    return Volume(data=np.asarray(data), affine=np.asarray(img.affine, dtype=np.float64), path=str(p), format="nifti", header=img.header,
                  modality=_descrip_modality(img.header))


# the one spelling, in a NIfTI's 80-byte descrip field, of the modality a DICOM series said it was
_MODALITY_DESCRIP = re.compile(r"(?:^|;)\s*modality=([A-Za-z]{2,3})\s*(?:;|$)")


def _descrip_modality(header) -> str | None:
    try:
        text = bytes(np.asarray(header["descrip"]).item()).decode("ascii", "replace")
    except (KeyError, TypeError, ValueError):
        return None
    m = _MODALITY_DESCRIP.search(text.rstrip("\0"))
    return m.group(1).upper() if m else None


def save_volume_nifti(vol: Volume, path: str | Path) -> Path:
    """``vol`` as NIfTI: float32 voxels, its affine as qform and sform, and its modality (when the source
    said, e.g. a DICOM series) as ``modality=<M>`` in ``descrip`` — nothing else of the source's header
    (a DICOM series' patient fields are never in a :class:`Volume`). Written atomically."""
    import nibabel as nib

    img = nib.Nifti1Image(np.asarray(vol.data, dtype=np.float32), vol.affine)
    img.set_qform(vol.affine, code=1)
    img.set_sform(vol.affine, code=1)
    modality = re.sub(r"[^A-Za-z]", "", str(vol.modality or ""))[:3].upper()
    if len(modality) >= 2:
        img.header["descrip"] = f"modality={modality}".encode("ascii")
    path = Path(path)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return path


# deflate cannot compress better than ~1032:1, so a .nii.gz of n bytes holds at most this many times n
_MAX_DEFLATE_RATIO = 1040


def _check_nifti_size(img, p: Path) -> None:
    """Refuse, before allocating the array, a NIfTI file too short for the data its header declares
    (a truncated download, a header-only file): exactly for .nii, by deflate's bound for .nii.gz."""
    need = int(img.header.get_data_offset()) + int(np.prod([int(s) for s in img.shape], dtype=np.float64)) * img.header.get_data_dtype().itemsize
    have = p.stat().st_size
    gz = p.name.lower().endswith(".gz")
    if (have * _MAX_DEFLATE_RATIO if gz else have) < need:
        raise MedicalInputError(f"{p}: truncated or damaged: the header declares {tuple(int(s) for s in img.shape)} voxels of "
                                f"{img.header.get_data_dtype()} ({need:,} bytes), but the file holds {have:,}"
                                + (" compressed bytes, too few for that" if gz else " bytes"))


def _check_header_shape(shape, p: Path) -> None:
    if len(shape) >= 3 and (any(int(s) > MAX_SIDE for s in shape) or int(np.prod([int(s) for s in shape], dtype=np.float64)) > MAX_VOXELS):
        raise MedicalInputError(f"{p}: absurd volume size {tuple(int(s) for s in shape)} in the header (limit {MAX_SIDE} per axis, {MAX_VOXELS:,} voxels)")


def _load_nrrd(p: Path) -> Volume:
    import nrrd

    hdr = nrrd.read_header(str(p))
    _check_header_shape(hdr.get("sizes", ()), p)
    data, hdr = nrrd.read(str(p))
    dirs = hdr.get("space directions")
    if dirs is not None and data.ndim > 3:
        # a 3D volume stored with a non-spatial axis (written 'none': a one-component list, one time point) of length 1:
        # drop that axis and keep the spatial axes' geometry — it used to reach the check as a trailing singleton axis
        # after the geometry had been replaced by the identity (1 mm voxels at the origin, in the wrong place)
        if drop := _nrrd_list_axes_to_drop(dirs, data.shape):
            data = np.squeeze(data, axis=drop)
    elif dirs is None and data.ndim > 3 and all(n == 1 for n in data.shape[3:]):
        data = data.reshape(data.shape[:3])  # the same, geometry from 'spacings'
    if data.ndim != 3:  # refused here: a geometry for it would be made up
        raise MedicalInputError(f"{p}: expected a 3D volume, got {data.ndim}D data of shape {tuple(data.shape)}"
                                + (" (a 4D series: pick one volume first)" if data.ndim == 4 else ""))
    if dirs is None:
        spacing = hdr.get("spacings", [1.0, 1.0, 1.0])
        dirs = np.diag(np.asarray(spacing, dtype=float)[:3])
    dirs = _nrrd_spatial_dirs(dirs)
    origin = np.asarray(hdr.get("space origin", [0.0, 0.0, 0.0]), dtype=float)
    aff = np.eye(4)
    aff[:3, :3] = dirs.T  # NRRD rows are the per-axis direction vectors
    aff[:3, 3] = origin
    space = str(hdr.get("space", "left-posterior-superior")).lower()
    if space in ("left-posterior-superior", "lps"):
        aff = _LPS_TO_RAS @ aff
    elif space not in ("right-anterior-superior", "ras"):
        raise MedicalInputError(f"{p}: NRRD space {space!r} is not supported (expected RAS or LPS)")
    return Volume(data=data, affine=aff, path=str(p), format="nrrd")


def _load_dicom_series(folder: Path) -> Volume:
    import pydicom

    files = sorted(f for f in folder.iterdir() if f.is_file() and not f.name.startswith("."))
    slices = []
    for f in files:
        try:
            ds = pydicom.dcmread(str(f), specific_tags=[*DICOM_SAFE_TAGS, "PixelData", "BitsAllocated", "BitsStored",
                                                        "PixelRepresentation", "SamplesPerPixel", "PhotometricInterpretation",
                                                        "SeriesInstanceUID", "HighBit", "TransferSyntaxUID", "NumberOfFrames"])
        except Exception:  # noqa: BLE001 - non-DICOM files in the folder are skipped
            continue
        _refuse_multiframe(ds, folder)
        if "PixelData" not in ds or "ImagePositionPatient" not in ds:
            continue
        slices.append(ds)
    if not slices:
        raise MedicalInputError(_no_series_message(folder))
    series = {str(getattr(s, "SeriesInstanceUID", "")) for s in slices}
    if len(series) > 1:
        raise MedicalInputError(f"{folder}: holds {len(series)} DICOM series; put one series per folder")
    _check_one_geometry(slices, folder)
    iop = np.asarray(slices[0].ImageOrientationPatient, dtype=float)
    row, col = iop[:3], iop[3:]
    normal = np.cross(row, col)
    slices.sort(key=lambda s: float(np.dot(np.asarray(s.ImagePositionPatient, dtype=float), normal)))
    pos = np.asarray([np.asarray(s.ImagePositionPatient, dtype=float) for s in slices])
    if len(slices) > 1:
        gaps = np.diff(pos @ normal)
        if np.any(gaps <= 1e-6):
            raise MedicalInputError(f"{folder}: duplicate slice positions in the DICOM series")
        if np.ptp(gaps) > 0.01 * abs(np.median(gaps)) + 1e-3:
            raise MedicalInputError(f"{folder}: uneven slice spacing ({gaps.min():.3f}..{gaps.max():.3f} mm); resample the series first")
        dz = float(np.median(gaps))
        # the slices' own step, normal and in-plane: a gantry-tilted CT moves each slice along the table as well, so its
        # grid is sheared — taking only the normal component placed slice k up to k x the shift away from where the
        # scanner put it (the anatomy sheared, the mask misregistered by centimetres). The sheared affine keeps it exact
        # (preprocessing resamples it onto an orthogonal grid; masks go back onto this one)
        step = (pos[-1] - pos[0]) / (len(slices) - 1)
        off_line = pos - (pos[0] + np.outer(np.arange(len(slices)), step))
        if np.abs(off_line).max() > 0.01 * float(np.linalg.norm(step)) + 1e-3:
            raise MedicalInputError(f"{folder}: the DICOM slice positions do not lie on one line (up to {np.abs(off_line).max():.3f} mm off); "
                                    "one evenly spaced series per folder, or resample the series first")
    else:
        dz = float(getattr(slices[0], "SliceThickness", 1.0) or 1.0)
        step = normal * dz
    dr, dc = (float(x) for x in slices[0].PixelSpacing)  # row spacing (between rows), column spacing
    arrs = []
    for s in slices:
        a = s.pixel_array.astype(np.float32)
        a = a * float(getattr(s, "RescaleSlope", 1) or 1) + float(getattr(s, "RescaleIntercept", 0) or 0)
        arrs.append(a.T)  # (columns, rows): voxel axis 0 runs along the row direction
    data = np.stack(arrs, axis=-1)
    lps = np.eye(4)
    lps[:3, 0] = row * dc
    lps[:3, 1] = col * dr
    lps[:3, 2] = step
    lps[:3, 3] = pos[0]
    uid = str(getattr(slices[0], "SeriesInstanceUID", folder.name))
    return Volume(data=data, affine=_LPS_TO_RAS @ lps, path=str(folder), format="dicom", modality=str(getattr(slices[0], "Modality", "")) or None,
                  series_hash=hashlib.sha256(uid.encode()).hexdigest()[:12])


def _number_of_frames(ds) -> int:
    """A DICOM dataset's NumberOfFrames (1 when absent, empty or not a number)."""
    try:
        return int(getattr(ds, "NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        return 1


def _refuse_multiframe(ds, folder: Path) -> None:
    """An enhanced (multi-frame) DICOM file holds a whole series in one file, its geometry per frame in functional
    group sequences this reader does not take: it was skipped as 'no slices with geometry', or, with a top-level
    position, stacked as one slice of the wrong shape. Refused by name (the file's name is not shown: it may carry a
    patient's name)."""
    if (frames := _number_of_frames(ds)) > 1:
        raise MedicalInputError(f"{folder}: holds a multi-frame (enhanced) DICOM file ({frames} frames in one file); this reader takes "
                                "classic single-frame series (one slice per file) — export the series as classic DICOM, or convert it "
                                "to NIfTI (e.g. dcm2niix) and pass that file")


def _check_one_geometry(slices: list, folder: Path) -> None:
    """The slices of one volume share one orientation, pixel spacing and size, and hold grey values:
    the volume's geometry is taken from the first slice, so a slice that differs (a localizer or a
    re-formatted slice filed under the same series) would otherwise be placed silently wrong."""
    first = slices[0]
    if any("PixelSpacing" not in s for s in slices):
        raise MedicalInputError(f"{folder}: a DICOM slice has no PixelSpacing; cannot place it in space")
    if any(int(getattr(s, "SamplesPerPixel", 1) or 1) != 1 for s in slices):
        raise MedicalInputError(f"{folder}: colour DICOM images (SamplesPerPixel > 1) are not CT/MR grey-value volumes")
    checks = (("orientation (ImageOrientationPatient)", lambda s: np.asarray(s.ImageOrientationPatient, dtype=float), 1e-3),
              ("pixel spacing (PixelSpacing)", lambda s: np.asarray(s.PixelSpacing, dtype=float), 1e-3),
              ("size (Rows x Columns)", lambda s: np.asarray([int(s.Rows), int(s.Columns)], dtype=float), 0.0))
    for what, get, tol in checks:
        ref = get(first)
        n = sum(1 for s in slices if get(s).shape != ref.shape or not np.allclose(get(s), ref, atol=tol, rtol=0))
        if n:
            raise MedicalInputError(f"{folder}: {n} of {len(slices)} DICOM slices differ from the first in {what}; "
                                    "one volume per folder, with one geometry (move localizers and other series out)")


def save_mask_like(mask: np.ndarray, reference: Volume, path: str | Path) -> Path:
    """Write ``mask`` (on ``reference``'s voxel grid) as NIfTI with exactly the reference affine
    (and, for NIfTI inputs, the same qform/sform codes)."""
    import nibabel as nib

    mask = np.asarray(mask)
    if mask.shape != reference.shape:
        raise MedicalInputError(f"mask shape {mask.shape} differs from the volume {reference.path} shape {reference.shape}")
    out = mask.astype(np.uint8 if mask.max(initial=0) < 256 else np.int16)
    if reference.header is not None and hasattr(reference.header, "get_sform"):
        hdr = reference.header.copy()
        if _descrip_modality(hdr):  # a mask is not a CT/MR scan: it must not be read back as one
            hdr["descrip"] = b""
        hdr.set_data_dtype(out.dtype)
        hdr.set_slope_inter(1, 0)
        img = nib.Nifti1Image(out, reference.affine, header=hdr)
        s_form, s_code = reference.header.get_sform(coded=True)
        q_form, q_code = reference.header.get_qform(coded=True)
        # each form is the input's own: when its qform and sform differ (scanner vs. template space), a
        # viewer that reads the qform must place the mask where it places the image
        img.set_sform(s_form if s_code else None, code=int(s_code) if s_code else 0)
        img.set_qform(q_form if q_code else None, code=int(q_code) if q_code else 0)
        if not s_code and not q_code:
            img.set_sform(reference.affine, code=1)
    else:
        img = nib.Nifti1Image(out, reference.affine)
        img.set_qform(reference.affine, code=1)
        img.set_sform(reference.affine, code=1)
    path = Path(path)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return path
