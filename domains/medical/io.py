"""Reading and writing volumes with their geometry: NIfTI (.nii/.nii.gz), NIfTI-pair and Analyze 7.5 (.hdr + .img,
either gzipped), NRRD (.nrrd/.nhdr) and DICOM series folders, all returned as a :class:`Volume` — a 3D array plus the voxel→world (RAS, mm)
affine — so that every mask we write lands on exactly the input's grid.

DICOM privacy: only a whitelist of technical tags (geometry, modality, rescale) is ever read into
a :class:`Volume`; patient-identifying tags (name, ID, birth date, accession number, …) never
enter our objects, logs, outputs or the tracking store. The volume's ``id`` for a DICOM series is
a hash of the SeriesInstanceUID, never a patient field.

A DICOM series converted to NIfTI (:func:`save_volume_nifti`, the dashboard's uploads) keeps what it
says it is: its Modality goes into the NIfTI ``descrip`` field as ``modality=CT`` / ``modality=MR``,
read back into :attr:`Volume.modality`, so the model's modality check sees the series through the
conversion. Other NIfTI files (no such field) have no modality, as before.

A ``.hdr`` is read by nibabel, through the NIfTI reader and its header checks: a NIfTI-pair header (magic ``ni1``) has the
whole NIfTI geometry; an Analyze 7.5 header (no NIfTI magic: OASIS-1, older SPM/FSL output) stores voxel sizes but no
orientation, so its axes are taken as nibabel reads them (its default, after SPM): the storage most Analyze files use,
"radiological" — the first axis from the patient's right to left, the second posterior to anterior, the third inferior to
superior (LAS) — and a warning says so once per file. SimpleITK/ITK (and so Slicer, ITK-SNAP) reads the same left/right and
inferior/superior but the second axis anterior to posterior (LPS), and neither reader uses the header's ``orient`` byte. Its
mask is written as Analyze too, with the input's own header (:func:`save_mask_like`): whichever way a viewer reads Analyze,
it places mask and image alike.
"""

from __future__ import annotations

import hashlib
import re
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.io import atomic_path
from core.errors import one_line, plain
from core.logging import get_logger
from domains.medical.validation import (MAX_SIDE, MAX_VOXELS, MedicalInputError, check_image_array, check_modality, check_not_blank, check_resampled_size,
                                        check_spacing)

__all__ = ["Volume", "load_volume", "save_mask_like", "volume_id", "is_volume_path", "DICOM_SAFE_TAGS", "IMAGE_SUFFIXES", "probe_volume",
           "check_input", "read_input_for_model", "is_dicom_file", "content_id", "save_volume_nifti", "header_geometry",
           "list_dicom_series", "volume_count", "DicomFolder", "nrrd_data_files", "nifti_affine_mm",
           "data_files"]

log = get_logger("medical.io")

# a NIfTI-pair or Analyze 7.5 header; its voxels are in the .img (.img.gz) beside it (nibabel reads both kinds)
_PAIR_SUFFIXES = (".hdr", ".hdr.gz")
_NIBABEL_SUFFIXES = (".nii", ".nii.gz", *_PAIR_SUFFIXES)
IMAGE_SUFFIXES = (".nii", ".nii.gz", *_PAIR_SUFFIXES, ".nrrd", ".nhdr", ".dcm")
_SERIES_FILE_SUFFIXES = (*_NIBABEL_SUFFIXES, ".nrrd", ".nhdr")  # files that may hold a 4D series (--volume picks one volume)
# The only DICOM attributes we read, with the pixel-format tags and _SERIES_TAGS (SeriesInstanceUID, SeriesNumber,
# ImageType: which series a slice belongs to). Everything else (PatientName, PatientID, PatientBirthDate,
# AccessionNumber, InstitutionName, ReferringPhysicianName, SeriesDescription, dates, UIDs other than the series one
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
    format: str  # "nifti" (a NIfTI-pair too) | "analyze" (Analyze 7.5: no orientation stored) | "nrrd" | "dicom"
    modality: str | None = None  # "CT" / "MR" when the file says so (DICOM, or a NIfTI converted from it), else None
    header: Any = field(default=None, repr=False)  # the NIfTI header, kept to write masks with identical qform/sform
    series_hash: str | None = None  # DICOM: a short hash of SeriesInstanceUID (the UID itself never leaves the reader)
    orientation_assumed: str | None = None  # Analyze 7.5 (no orientation stored): the axis codes assumed, e.g. "LAS"

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
    for s in (".nii.gz", ".nii", ".hdr.gz", ".hdr", ".nrrd", ".nhdr"):
        if name.lower().endswith(s):
            return name[: -len(s)]
    return name


def _dispatch(path: str | Path, dicom, nifti, nrrd, series: str | None = None, volume: int | None = None,
              headers: _DicomHeaders | None = None):
    """Call the reader for ``path``'s kind (a DICOM series folder, NIfTI, NRRD); refuse anything else,
    and turn a library's parse error into a :class:`MedicalInputError` naming the file (one line). ``series``
    picks one series of a DICOM folder holding several, ``volume`` one volume of a 4D NIfTI (each refused for
    the other kinds of input); ``headers``: a DICOM folder's headers already read (:class:`_DicomHeaders`)."""
    p = Path(path)
    if not p.exists():
        raise MedicalInputError(f"{p}: no such file or folder")
    lower = p.name.lower()
    if series is not None and not p.is_dir():
        raise MedicalInputError(f"--series {plain(series)}: selects one series of a DICOM folder, but {p} is a file; leave --series out")
    if volume is not None and not p.is_dir() and not lower.endswith(_SERIES_FILE_SUFFIXES):
        raise MedicalInputError(f"--volume {plain(volume)}: selects one volume of a 4D NIfTI or NRRD file or of a DICOM series of "
                                f"several images at each position, but {p} is none of these; leave --volume out")
    with _read_errors_named(p):
        if p.is_dir():
            return dicom(p, series=series, headers=headers, volume=volume)
        if lower.endswith(_NIBABEL_SUFFIXES):
            return nifti(p, volume=volume)
        if lower.endswith((".img", ".img.gz")) and (header := _pair_header_of(p)) is not None:
            raise MedicalInputError(f"{p}: the voxel file of the Analyze/NIfTI pair {header.name}; pass its header file {header}")
        if lower.endswith((".nrrd", ".nhdr")):
            return nrrd(p, volume=volume)
        if lower.endswith(".dcm") or is_dicom_file(p):
            raise MedicalInputError(_single_dicom_message(p))
        raise MedicalInputError(f"{p}: not a supported volume (expected .nii, .nii.gz, .hdr (an Analyze/NIfTI pair), .nrrd, .nhdr or a "
                                "DICOM series folder)")


def _pair_header_of(p: Path) -> Path | None:
    """The ``.hdr`` (``.hdr.gz``) beside a pair's voxel file ``p`` (``scan.img`` → ``scan.hdr``), None when there is none."""
    header = _pair_file_map(p).get("header")
    return header if header is not None and header.is_file() else None


def _pair_file_map(p: Path) -> dict[str, Path]:
    """The files of the Analyze/NIfTI pair ``p`` is one of (``header``, ``image``, SPM's ``mat``), by nibabel's own naming
    rules (scan.hdr.gz ↔ scan.img.gz, SCAN.HDR ↔ SCAN.IMG), from the name alone: the reader's pairing, so :func:`data_files`
    and :func:`_pair_header_of` cannot pair other files than it reads; {} for a name it cannot pair."""
    import nibabel as nib

    try:
        fmap = nib.Spm2AnalyzeImage.filespec_to_file_map(str(p))
    except Exception:  # noqa: BLE001 - the reader names a name it cannot pair
        return {}
    return {kind: Path(holder.filename) for kind, holder in fmap.items()}


@contextmanager
def _read_errors_named(p: Path):
    """A library's parse error (a missing tag, a malformed header) while reading ``p`` becomes a :class:`MedicalInputError`
    naming the file in one line; a :class:`MedicalInputError` passes as it is."""
    try:
        yield
    except MedicalInputError:
        raise
    except Exception as e:  # noqa: BLE001 - a library's parse error becomes a user error naming the file
        raise MedicalInputError(f"{p}: cannot be read as a {_kind(p)} volume ({type(e).__name__}: {one_line(e, join=True)}){_misnamed_hint(p)}") from None


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


def load_volume(path: str | Path, *, dtype=np.float32, check: bool = True, series: str | None = None, volume: int | None = None,
                headers: _DicomHeaders | None = None, name: str | None = None) -> Volume:
    """Load a NIfTI / NRRD file or a DICOM series folder; clear errors for anything else. ``series``: which
    series of a DICOM folder holding several (its ``series-<hash>`` or SeriesNumber; without it such a folder is
    refused with the list of its series); ``volume``: which volume (0-based) of a 4D NIfTI or NRRD (without it a 4D
    file is refused, naming how many volumes it holds); ``headers``: the folder's DICOM headers as the check read them
    (:func:`read_input_for_model`), so they are not read again. An Analyze 7.5 file (no orientation stored) is warned about
    once, naming it as ``name`` (score: the item's id, not its possibly identifying file name) or else its path."""
    p = Path(path)
    vol = _dispatch(p, _load_dicom_series, _load_nifti, _load_nrrd, series=series, volume=volume, headers=headers)
    if vol.orientation_assumed:
        _warn_no_orientation(name or str(p), vol.orientation_assumed)
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
    vols = [f.name for f in folder.iterdir() if f.is_file() and f.name.lower().endswith(_SERIES_FILE_SUFFIXES)]
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


def probe_volume(path: str | Path, series: str | None = None, volume: int | None = None,
                 headers: _DicomHeaders | None = None) -> tuple[tuple[int, ...], tuple[float, float, float]]:
    """(shape, spacing in mm) from the header alone — nothing is allocated (a DICOM series folder: its
    slices' headers, without pixel data). Raises :class:`MedicalInputError` for what ``load_volume``
    would refuse by its name, header or geometry (several DICOM series without ``series``, a 4D NIfTI or NRRD without
    ``volume``, a compression no installed decoder reads)."""
    return _dispatch(path, _probe_dicom_series, _probe_nifti, _probe_nrrd, series=series, volume=volume, headers=headers)


def _check_nifti_forms(img, p: Path) -> None:
    """nibabel (as MONAI's readers) takes the sform whenever its code is set; an sform that is zero, singular or not
    finite read as an 'absurd voxel spacing (0, 0, 0)', even when the qform beside it is a valid geometry. Say which
    form is broken, and that the two disagree."""
    def usable(form) -> bool:  # finite, with non-zero voxel sizes
        return form is not None and bool(np.all(np.isfinite(form))) and abs(np.linalg.det(form[:3, :3])) > 1e-9

    if not hasattr(img.header, "get_sform"):  # Analyze 7.5: no forms
        return
    sform, s_code = img.header.get_sform(coded=True)
    if not s_code or sform is None or usable(sform):
        return
    qform, q_code = img.header.get_qform(coded=True)
    q_ok = bool(q_code) and usable(qform)
    raise MedicalInputError(f"{p}: its sform (sform_code {int(s_code)}), the geometry NIfTI readers use first, is singular or not finite"
                            + (f", while its qform (qform_code {int(q_code)}) is a valid geometry: the header contradicts itself; copy the "
                               "qform to the sform (e.g. fslorient -copyqform2sform) or set sform_code to 0, if the qform is right"
                               if q_ok else "; expected a voxel-to-world matrix with non-zero voxel sizes"))


# a NIfTI's spatial unit (xyzt_units) is that of its pixdim and qform/sform; nibabel (and MONAI) read every file as millimetres
_NIFTI_MM_PER_UNIT = {"meter": 1000.0, "mm": 1.0, "micron": 0.001}


def nifti_affine_mm(img) -> np.ndarray:
    """``img``'s voxel→world affine in millimetres. A header whose spatial unit is metres (pixdim 0.001 for a 1 mm voxel) or
    microns was read as if in millimetres — refused as an 'absurd voxel spacing (0.001, ...) mm; check the header's units'
    although the header said exactly what it meant (ITK, and so Slicer and ITK-SNAP, scale it to millimetres as here). The
    mask is written with the input's own forms and units (:func:`save_mask_like`), so it stays in the file's units."""
    aff = np.asarray(img.affine, dtype=np.float64).copy()
    try:
        unit = img.header.get_xyzt_units()[0]
    except Exception:  # noqa: BLE001 - a header without units: millimetres, as before
        return aff
    aff[:3, :] *= _NIFTI_MM_PER_UNIT.get(unit, 1.0)
    return aff


def _probe_nifti(p: Path, volume: int | None = None) -> tuple[tuple[int, ...], tuple[float, float, float]]:
    import nibabel as nib

    img = nib.load(str(p))
    _check_header_shape(img.shape, p)
    _check_pair_data_file(img, p)
    _check_nifti_forms(img, p)
    _nifti_volume_index(img.shape, p, volume)
    return tuple(int(s) for s in img.shape[:3]), _spacing_of(nifti_affine_mm(img))


def _nrrd_axes(hdr) -> tuple[list[int], int | None] | None:
    """How a NRRD header's axes read as one volume: (its 3 spatial axes in order, its one non-spatial axis of length > 1 —
    a 4D series' list/time axis, e.g. a DWI's gradients or an MSD image's channels — or None). Non-spatial axes of length 1
    (a one-entry list, one time point; Slicer and ITK write them) are dropped. An axis is non-spatial when its ``space
    directions`` row is ``none``, else when its ``kinds`` entry is not domain/space, else when its ``spacings`` entry is NaN;
    without any of these the first three axes are spatial. None for anything else (2D, two non-spatial axes of length > 1):
    the reader refuses its dimensionality. The probe, :func:`volume_count` and the reader all use it, so the shape one
    reports is the shape the other reads."""
    sizes = [int(n) for n in hdr.get("sizes", ())]
    dirs, kinds, spacings = hdr.get("space directions"), hdr.get("kinds"), hdr.get("spacings")
    if dirs is not None and len(dirs) == len(sizes):
        spatial = [d is not None and not np.all(np.isnan(np.asarray(d, dtype=float))) for d in dirs]
    elif kinds is not None and len(kinds) == len(sizes):
        spatial = [str(k).strip().lower() in ("domain", "space") for k in kinds]
    elif spacings is not None and len(spacings) == len(sizes):
        spatial = [bool(np.isfinite(float(x))) for x in spacings]
    else:
        spatial = [i < 3 for i in range(len(sizes))]
    axes = [i for i, s in enumerate(spatial) if s]
    listed = [i for i, s in enumerate(spatial) if not s and sizes[i] > 1]
    if len(axes) != 3 or len(listed) > 1:
        return None
    return axes, (listed[0] if listed else None)


def _nrrd_geometry(hdr, axes: list[int]) -> np.ndarray:
    """The 3x3 direction matrix (one row per spatial axis, in mm) of a NRRD's spatial ``axes``."""
    dirs = hdr.get("space directions")
    if dirs is not None:
        return np.asarray([np.asarray(dirs[i], dtype=float) for i in axes], dtype=float)
    spacings = hdr.get("spacings")
    return np.diag([float(spacings[i]) if spacings is not None and np.isfinite(float(spacings[i])) else 1.0 for i in axes])


# NRRD axis kinds whose entries are volumes of one series (time points, a DWI's gradients, channels); other non-spatial
# kinds (RGB-color, 3-vector, 3D-symmetric-matrix, ...) are the components of one multi-valued image
_NRRD_SERIES_KINDS = ("list", "time", "point", "none", "???")


def _nrrd_axis_kind(hdr, axis: int) -> str | None:
    """The ``kinds`` entry of a NRRD's ``axis`` as written; None when the header gives no kind for each axis."""
    kinds = hdr.get("kinds")
    return str(kinds[axis]).strip() if kinds is not None and len(kinds) == len(hdr.get("sizes", ())) else None


def _nrrd_volume_index(hdr, p: Path, volume: int | None) -> tuple[list[int], int | None, int | None] | None:
    """(spatial axes, series axis, index to read along it) of a NRRD (:func:`_nrrd_axes`), the volume checked as a 4D NIfTI's is."""
    layout = _nrrd_axes(hdr)
    if layout is None:
        if volume is not None:
            raise MedicalInputError(f"--volume {plain(volume)}: {p} is not a 3D volume nor a 4D series of them "
                                    f"(sizes {tuple(int(n) for n in hdr.get('sizes', ()))}); leave --volume out")
        return None
    axes, series_axis = layout
    sizes = tuple(int(n) for n in hdr.get("sizes", ()))
    n = sizes[series_axis] if series_axis is not None else None
    kind = ""
    named = _nrrd_axis_kind(hdr, series_axis) if series_axis is not None else None
    if named is not None:
        if named.lower() not in _NRRD_SERIES_KINDS:  # colour, vector (a displacement field), tensor: components, not volumes
            raise MedicalInputError(f"{p}: its axis {series_axis + 1} of {len(sizes)} holds {n} components of kind {plain(named)} (a colour, "
                                    "vector or tensor image), not grey-value volumes; expected a 3D volume, or a series of them on a "
                                    "'list' or 'time' axis")
        kind = f"{plain(named)} "
    where = f"along its {kind}axis {series_axis + 1} of {len(sizes)}" if series_axis is not None else ""
    return axes, series_axis, _pick_volume_index(n, p, volume, sizes, where)


def _probe_nrrd(p: Path, volume: int | None = None) -> tuple[tuple[int, ...], tuple[float, float, float]]:
    import nrrd

    hdr = nrrd.read_header(str(p))
    sizes = tuple(int(s) for s in hdr.get("sizes", ()))
    _check_header_shape(sizes, p)
    picked = _nrrd_volume_index(hdr, p, volume)
    if picked is None:  # not one volume: the reader refuses its dimensionality
        return sizes[:3], tuple(float(s) for s in np.sqrt((_nrrd_geometry(hdr, list(range(min(3, len(sizes))))) ** 2).sum(axis=1)))
    axes = picked[0]
    return tuple(sizes[i] for i in axes), tuple(float(s) for s in np.sqrt((_nrrd_geometry(hdr, axes) ** 2).sum(axis=1)))


def _probe_dicom_series(folder: Path, series: str | None = None, headers: _DicomHeaders | None = None,
                        volume: int | None = None) -> tuple[tuple[int, ...], tuple[float, float, float]]:
    rows = cols = None
    positions, spacing, iop = [], None, None
    headers = (headers or _DicomHeaders(folder)).placed()
    headers = _pick_series(headers, folder, series) if headers else headers
    _check_decodable(headers, folder)
    headers = _pick_stacked_volume(headers, folder, volume)
    for ds in headers:
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


def header_geometry(path: str | Path) -> tuple[tuple[int, ...], np.ndarray] | None:
    """(shape, voxel→RAS affine) of a NIfTI file from its header alone (the affine :func:`load_volume` uses);
    None for other kinds of input or a header that does not read (the reader names that problem later)."""
    p = Path(path)
    if not (p.is_file() and p.name.lower().endswith(_NIBABEL_SUFFIXES)):
        return None
    try:
        import nibabel as nib

        img = nib.load(str(p))
        return tuple(int(s) for s in img.shape), nifti_affine_mm(img)
    except Exception:  # noqa: BLE001 - load_volume refuses it by name when the case is read
        return None


def check_input(path: str | Path, target_spacing: float | None = None, series: str | None = None,
                volume: int | None = None, headers: _DicomHeaders | None = None) -> tuple[tuple[int, ...], tuple[float, float, float]]:
    """Everything about an input that can be refused from its header — name, size, spacing, (with
    the model's ``target_spacing``) the size of the resampled grid, and for NIfTI whether the file can
    hold the data its header declares; a DICOM folder of several series (without ``series``), a compression no
    installed decoder reads, a 4D NIfTI (without ``volume``) — before any model or run is created. Returns (shape, spacing).
    ``headers``: as :func:`load_volume`."""
    shape, spacing = probe_volume(path, series=series, volume=volume, headers=headers)
    check_spacing(spacing, path)
    if target_spacing is not None and len(shape) >= 3:
        check_resampled_size(shape[:3], spacing, target_spacing, path)
    if Path(path).is_file() and Path(path).name.lower().endswith(_NIBABEL_SUFFIXES):
        import nibabel as nib

        _check_nifti_size(nib.load(str(path)), Path(path))
    return shape, spacing


def read_input_for_model(path: str | Path, meta: dict[str, Any], series: str | None = None, volume: int | None = None) -> Volume:
    """The input read and checked for the model a run's ``task.json`` (``meta``) describes — everything refused
    without the model: the header (:func:`check_input`), then the voxels (4D, NaN, a truncated file), a blank
    image, and a DICOM Modality the model was not trained on. ``infer`` and the dashboard call it before
    loading the model. ``series`` / ``volume``: as :func:`load_volume`. A DICOM folder's headers are read once, for the
    check and the reader (which then reads the chosen series' pixels only)."""
    pipeline = meta["pipeline"]
    headers = _DicomHeaders(Path(path))
    check_input(path, pipeline["spacing"], series=series, volume=volume, headers=headers)
    vol = load_volume(path, series=series, volume=volume, headers=headers)
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
    if p.is_file():  # a detached header (.nhdr, .hdr): its voxels are in the data file(s) beside it
        files += [f for f in data_files(p) if f.is_file()]
    for f in files:
        if p.is_dir():
            h.update(str(f.relative_to(p)).encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        h.update(b"\0")
    return f"{prefix}-{h.hexdigest()[:12]}"


def nrrd_data_files(path: str | Path) -> list[Path]:
    """The data file a detached NRRD header (``.nhdr``) names (``data file: scan.raw.gz``, beside it), as a path; [] for
    anything else, a header that does not read, or the multi-file forms (``LIST``, a ``%d`` pattern). ``score`` keys a
    ``.nhdr`` by its data's bytes too (:func:`content_id`: the header alone did not change when the voxels did) and does
    not take that data file for an input of its own."""
    p = Path(path)
    if not p.name.lower().endswith(".nhdr"):
        return []
    try:
        import nrrd

        name = nrrd.read_header(str(p)).get("data file")
    except Exception:  # noqa: BLE001 - the reader names a header that does not read
        return []
    if not isinstance(name, str) or not name.strip() or name.strip().upper().startswith("LIST") or "%" in name:
        return []
    data = Path(name.strip())
    return [data if data.is_absolute() else p.parent / data]


def data_files(path: str | Path) -> list[Path]:
    """The files beside a header file that hold its voxels, and so belong to its volume: a detached NRRD header's data file
    (:func:`nrrd_data_files`), an Analyze/NIfTI-pair header's ``.img`` (``.img.gz``) and, when there is one, the SPM ``.mat``
    nibabel takes its affine from; [] for anything else. ``score`` takes them as part of their header's item (not as inputs
    of their own) and :func:`content_id` hashes them with it."""
    p = Path(path)
    if not p.name.lower().endswith(_PAIR_SUFFIXES):
        return nrrd_data_files(p)
    files = _pair_file_map(p)  # without reading anything
    if not files:
        return []
    return [files["image"]] + ([files["mat"]] if files["mat"].is_file() else [])


def _kind(p: Path) -> str:
    lower = p.name.lower()
    if lower.endswith(_PAIR_SUFFIXES):
        return "NIfTI-pair/Analyze"
    return "NIfTI" if ".nii" in lower else "NRRD" if ".nrrd" in lower or ".nhdr" in lower else "DICOM"


def _nifti_volume_index(shape, p: Path, volume: int | None) -> int | None:
    """For a NIfTI of ``shape``: the index along its 4th axis to read (``volume``), None to read it all
    (:func:`_pick_volume_index`). Trailing axes of length 1 do not count (a 3D volume stored as (x, y, z, 1, 1))."""
    dims = _nifti_dims(shape)
    if len(dims) != 4:  # 3D (or 5D+ and refused by check_image_array as before)
        if volume is not None and len(dims) == 3:
            _pick_volume_index(None, p, volume, tuple(int(n) for n in shape), "")
        return None
    return _pick_volume_index(dims[3], p, volume, tuple(dims), "along its 4th axis")


def _nifti_dims(shape) -> list[int]:
    dims = [int(n) for n in shape]
    while len(dims) > 3 and dims[-1] == 1:
        dims.pop()
    return dims


def _pick_volume_index(n: int | None, p: Path, volume: int | None, shape: tuple[int, ...], where: str) -> int | None:
    """The volume to read of a file holding ``n`` volumes (None: a 3D volume) ``where`` (along which axis). A 4D series
    (time points, or an MSD image's channels — e.g. Task01_BrainTumour's FLAIR, T1w, t1gd, T2w; a DWI's gradients) is
    refused without ``volume``, naming how many it holds: the model segments one 3D volume, and which one is the user's
    choice (``infer --volume``, ``score --volume``)."""
    if n is None:
        if volume is not None:
            raise MedicalInputError(f"--volume {plain(volume)}: {p} is a 3D volume {shape}, not a 4D series; leave --volume out")
        return None
    if volume is None:
        raise MedicalInputError(f"{p}: expected a 3D volume, got 4D data of shape {shape}: {n} volumes {where} (time "
                                f"points, or channels such as an MSD image's modalities); pick one volume with --volume 0..{n - 1} "
                                "(infer, score), or save that volume as its own file")
    if not 0 <= int(volume) < n:
        raise MedicalInputError(f"--volume {plain(volume)}: {p} has {n} volumes {where}; expected 0..{n - 1}")
    return int(volume)


def volume_count(path: str | Path) -> int | None:
    """How many volumes a 4D NIfTI or NRRD file holds (along a NIfTI's 4th axis, a NRRD's non-spatial axis), from its header
    — what ``--volume`` picks among; None for a 3D volume, another kind of input or a header that does not read (the reader
    names that problem)."""
    p = Path(path)
    lower = p.name.lower()
    try:
        if p.is_file() and lower.endswith(_NIBABEL_SUFFIXES):
            import nibabel as nib

            dims = _nifti_dims(nib.load(str(p)).shape)
            return dims[3] if len(dims) == 4 else None
        if p.is_file() and lower.endswith((".nrrd", ".nhdr")):
            import nrrd

            hdr = nrrd.read_header(str(p))
            layout = _nrrd_axes(hdr)
            if layout is None or layout[1] is None:
                return None
            kind = _nrrd_axis_kind(hdr, layout[1])
            if kind is not None and kind.lower() not in _NRRD_SERIES_KINDS:
                return None  # colour/vector components, not volumes: the reader refuses it by name
            return int(hdr["sizes"][layout[1]])
    except Exception:  # noqa: BLE001 - the reader refuses it by name
        return None
    return None


def _load_nifti(p: Path, volume: int | None = None) -> Volume:
    import nibabel as nib

    img = nib.load(str(p))
    _check_header_shape(img.shape, p)  # before allocating: a corrupt header can claim terabytes
    _check_pair_data_file(img, p)
    _check_nifti_forms(img, p)
    affine = nifti_affine_mm(img)
    if len(img.shape) >= 3:
        check_spacing(_spacing_of(affine), p)
    _check_nifti_size(img, p)
    index = _nifti_volume_index(img.shape, p, volume)
    # one volume of a 4D file is read alone (the proxy applies the scaling to just that slice)
    data = np.asanyarray(img.dataobj) if index is None else np.asanyarray(img.dataobj[:, :, :, index])
    analyze = not isinstance(img.header, nib.Nifti1Header)
    # SPM's .mat beside an Analyze pair is a whole affine (nibabel reads it): then the orientation is stored, not assumed
    mat = img.file_map.get("mat")
    assumed = analyze and not (mat is not None and mat.filename and Path(mat.filename).is_file())
    return Volume(data=np.asarray(data), affine=affine, path=str(p), format="analyze" if analyze else "nifti", header=img.header,
                  modality=_descrip_modality(img.header), orientation_assumed="".join(nib.aff2axcodes(affine)) if assumed else None)


_WARNED_NO_ORIENTATION: set[str] = set()


def _warn_no_orientation(name: str, codes: str) -> None:
    """Once per file and process: an Analyze 7.5 file stores no orientation; which side is the patient's left is assumed."""
    if name in _WARNED_NO_ORIENTATION:
        return
    _WARNED_NO_ORIENTATION.add(name)
    log.warning(f"{_CONTROL_CHARS.sub('_', name)}: an Analyze 7.5 file stores no orientation; its axes are read as {codes} (nibabel's and "
                "SPM's radiological reading: the first axis from the patient's right to left, the second back to front, the third foot "
                "to head), so left/right is assumed, not known; the mask is written as Analyze with this file's header, so a viewer "
                "shows both alike")


def _check_pair_data_file(img, p: Path) -> None:
    """A pair's voxel file (``scan.img`` beside ``scan.hdr``) missing or shorter than its header declares: one line naming it
    and the bytes expected, before anything is allocated (nibabel failed only when the voxels were read, with a bare
    FileNotFoundError or 'Expected N bytes')."""
    if not p.name.lower().endswith(_PAIR_SUFFIXES):
        return
    image = Path(img.file_map["image"].filename)
    need = _declared_bytes(img)
    if not image.is_file():
        other = image.with_name(image.name[:-3]) if image.name.lower().endswith(".gz") else image.with_name(image.name + ".gz")
        hint = (f"; {other.name} is there: gzip or gunzip both files alike (scan.hdr + scan.img, or scan.hdr.gz + scan.img.gz)"
                if other.is_file() else "; copy it beside its header")
        raise MedicalInputError(f"{image}: missing — the voxel file of {p.name}, whose header declares {need:,} bytes of voxel data{hint}")


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


def _declared_bytes(img) -> int:
    """The bytes a NIfTI/Analyze header says its voxel data end at (offset + voxels x item size)."""
    return int(img.header.get_data_offset()) + int(np.prod([int(s) for s in img.shape], dtype=np.float64)) * img.header.get_data_dtype().itemsize


def _check_nifti_size(img, p: Path) -> None:
    """Refuse, before allocating the array, a NIfTI file too short for the data its header declares
    (a truncated download, a header-only file): exactly for .nii, by deflate's bound for .nii.gz."""
    need = _declared_bytes(img)
    if p.name.lower().endswith(_PAIR_SUFFIXES):  # the voxels are in the pair's .img (:func:`_check_pair_data_file` names a missing one)
        p = Path(img.file_map["image"].filename)
    have = p.stat().st_size
    gz = p.name.lower().endswith(".gz")
    if (have * _MAX_DEFLATE_RATIO if gz else have) < need:
        raise MedicalInputError(f"{p}: truncated or damaged: the header declares {tuple(int(s) for s in img.shape)} voxels of "
                                f"{img.header.get_data_dtype()} ({need:,} bytes), but the file holds {have:,}"
                                + (" compressed bytes, too few for that" if gz else " bytes"))


def _check_header_shape(shape, p: Path) -> None:
    if len(shape) >= 3 and (any(int(s) > MAX_SIDE for s in shape) or int(np.prod([int(s) for s in shape], dtype=np.float64)) > MAX_VOXELS):
        raise MedicalInputError(f"{p}: absurd volume size {tuple(int(s) for s in shape)} in the header (limit {MAX_SIDE} per axis, {MAX_VOXELS:,} voxels)")


def _load_nrrd(p: Path, volume: int | None = None) -> Volume:
    import nrrd

    hdr = nrrd.read_header(str(p))
    _check_header_shape(hdr.get("sizes", ()), p)
    picked = _nrrd_volume_index(hdr, p, volume)  # from the header: a 4D file without --volume is refused before its voxels are read
    data, hdr = nrrd.read(str(p))
    if picked is not None and data.ndim > 3:
        # one volume of a 4D series, or a 3D volume stored with non-spatial axes of length 1 (a one-component list, one time
        # point): keep the spatial axes and their geometry — a singleton axis used to reach the check after the geometry had
        # been replaced by the identity (1 mm voxels at the origin, in the wrong place)
        axes, series_axis, index = picked
        data = np.ascontiguousarray(data[tuple(slice(None) if i in axes else (index if i == series_axis else 0) for i in range(data.ndim))])
    if data.ndim != 3:  # refused here: a geometry for it would be made up
        raise MedicalInputError(f"{p}: expected a 3D volume, got {data.ndim}D data of shape {tuple(data.shape)}")
    dirs = _nrrd_geometry(hdr, picked[0] if picked is not None else [0, 1, 2])
    origin = np.asarray(hdr.get("space origin", [0.0, 0.0, 0.0]), dtype=float)
    aff = np.eye(4)
    aff[:3, :3] = dirs.T  # NRRD rows are the per-axis direction vectors
    aff[:3, 3] = origin
    space = str(hdr.get("space", "left-posterior-superior")).lower()
    if space in ("left-posterior-superior", "lps"):
        aff = _LPS_TO_RAS @ aff
    elif space in ("left-anterior-superior", "las"):  # the third anatomical space NRRD defines (was refused)
        aff = np.diag([-1.0, 1.0, 1.0, 1.0]) @ aff
    elif space not in ("right-anterior-superior", "ras"):
        raise MedicalInputError(f"{p}: NRRD space {plain(space)} is not supported (expected right-anterior-superior, "
                                "left-anterior-superior or left-posterior-superior)")
    return Volume(data=data, affine=aff, path=str(p), format="nrrd")


def _load_dicom_series(folder: Path, series: str | None = None, headers: _DicomHeaders | None = None, volume: int | None = None) -> Volume:
    slices = [ds for ds in (headers or _DicomHeaders(folder)).slices() if "PixelData" in ds and "ImagePositionPatient" in ds]
    if not slices:
        raise MedicalInputError(_no_series_message(folder))
    slices = _pick_series(slices, folder, series)
    _check_decodable(slices, folder)
    _check_one_geometry(slices, folder)
    slices = _pick_stacked_volume(slices, folder, volume)
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
            _refuse_missing_slices(gaps, slices, folder)
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
        a = _pixels(s, folder).astype(np.float32)
        a = a * float(getattr(s, "RescaleSlope", 1) or 1) + float(getattr(s, "RescaleIntercept", 0) or 0)
        arrs.append(a.T)  # (columns, rows): voxel axis 0 runs along the row direction
    data = np.stack(arrs, axis=-1)
    lps = np.eye(4)
    lps[:3, 0] = row * dc
    lps[:3, 1] = col * dr
    lps[:3, 2] = step
    lps[:3, 3] = pos[0]
    return Volume(data=data, affine=_LPS_TO_RAS @ lps, path=str(folder), format="dicom", modality=str(getattr(slices[0], "Modality", "")) or None,
                  series_hash=_series_hash_of(slices[0], folder))


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
    """Write ``mask`` (on ``reference``'s voxel grid) as NIfTI with exactly the reference's geometry: for NIfTI inputs (a
    NIfTI-pair too) its header's own qform/sform and codes, in its own units; else ``reference.affine``. An Analyze 7.5 input
    (no orientation stored) gets an Analyze mask with its own header instead, ``path`` ending ``.hdr`` (+ ``.img``) in
    place of ``.nii.gz`` (:func:`_save_analyze_mask`). Returns the path written."""
    import nibabel as nib

    mask = np.asarray(mask)
    if mask.shape != reference.shape:
        raise MedicalInputError(f"mask shape {mask.shape} differs from the volume {reference.path} shape {reference.shape}")
    out = mask.astype(np.uint8 if mask.max(initial=0) < 256 else np.int16)
    if reference.format == "analyze":
        return _save_analyze_mask(out, reference, Path(path))
    if reference.header is not None and hasattr(reference.header, "get_sform"):
        hdr = reference.header.copy()
        if _descrip_modality(hdr):  # a mask is not a CT/MR scan: it must not be read back as one
            hdr["descrip"] = b""
        hdr["cal_min"] = hdr["cal_max"] = 0  # the scan's display window (e.g. 10..2000) hid labels 1..N in viewers that honour it
        hdr.set_data_dtype(out.dtype)
        hdr.set_slope_inter(1, 0)
        # the header's own affine, in its own units (reference.affine is in millimetres: nifti_affine_mm)
        img = nib.Nifti1Image(out, reference.header.get_best_affine(), header=hdr)
        s_form, s_code = reference.header.get_sform(coded=True)
        q_form, q_code = reference.header.get_qform(coded=True)
        # each form is the input's own: when its qform and sform differ (scanner vs. template space), a
        # viewer that reads the qform must place the mask where it places the image
        # (an input with neither form set keeps neither: readers place such a file by its voxel sizes alone — the NIfTI
        # standard's method 1, ITK's and so Slicer's and ITK-SNAP's, at the origin — while nibabel makes up a flipped, centred
        # affine; a mask written with that affine as an sform sat mirrored and shifted beside its image in those viewers)
        img.set_sform(s_form if s_code else None, code=int(s_code) if s_code else 0)
        img.set_qform(q_form if q_code else None, code=int(q_code) if q_code else 0)
    else:
        img = nib.Nifti1Image(out, reference.affine)
        img.set_qform(reference.affine, code=1)
        img.set_sform(reference.affine, code=1)
    path = Path(path)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return path


# the Analyze 7.5 header's fields about the scan and its patient (the data_history block's patient_id, exp_date, exp_time,
# scannum, generated; the free-text descrip, db_name, aux_file): blanked in a mask written with the scan's header, as
# score names its outputs by content id, not by a possibly identifying name; the geometry fields (pixdim, origin, orient) stay
_ANALYZE_SCAN_FIELDS = ("patient_id", "exp_date", "exp_time", "scannum", "generated", "descrip", "db_name", "aux_file")


def _save_analyze_mask(out: np.ndarray, reference: Volume, path: Path) -> Path:
    """The mask of an Analyze 7.5 input as Analyze, with the input's header (voxel sizes, SPM origin, orient field) and its
    SPM ``.mat`` when it had one: readers differ on where an Analyze file lies (nibabel centres it or takes the SPM origin,
    ITK puts voxel 0 at the origin), so a NIfTI mask holding one reader's guess sat shifted beside its image in a viewer of
    the other; with one header, every viewer places both alike. Written as ``<name>.hdr`` + ``.img`` (``.nii``/``.nii.gz``
    of ``path`` replaced), the voxel file first and the header last, each atomically."""
    import nibabel as nib

    hdr = reference.header.copy()
    for key in _ANALYZE_SCAN_FIELDS:  # the scan's own record (its patient_id, exam date and time, free text), not the mask's
        hdr[key] = b""
    hdr["cal_min"] = hdr["cal_max"] = 0  # as for a NIfTI mask: not the scan's display window
    hdr.set_data_dtype(out.dtype)
    try:
        hdr.set_slope_inter(1.0, 0.0)  # SPM's scale factor: the mask's values are the labels
    except Exception:  # noqa: BLE001 - plain Analyze has no scaling to reset
        pass
    klass = next(c for c in (nib.AnalyzeImage, nib.Spm99AnalyzeImage, nib.Spm2AnalyzeImage) if c.header_class is type(hdr))  # the input's own kind
    # the header's own geometry as it is; the input's affine only when it came from a .mat beside it (nibabel writes one back)
    affine = None if np.allclose(hdr.get_best_affine(), reference.affine) else np.asarray(reference.affine)
    img = klass(out, affine, header=hdr)
    name = path.name
    for s in (".nii.gz", ".nii", ".hdr"):
        if name.lower().endswith(s):
            name = name[: -len(s)]
            break
    target = path.with_name(name + ".hdr")
    tmp_sides: list[Path] = []
    try:
        with atomic_path(target) as tmp:
            tmp_sides = [tmp.with_suffix(".img"), tmp.with_suffix(".mat")]
            nib.save(img, str(tmp))
            for side in tmp_sides:
                if side.exists():
                    with open(side, "rb+") as fh:  # as atomic_path does for the header: the voxels are on disk before the rename
                        os.fsync(fh.fileno())
                    os.replace(side, target.with_suffix(side.suffix))
    finally:  # a failed write leaves no temporary voxel file behind
        for side in tmp_sides:
            side.unlink(missing_ok=True)
    return target


# technical tags that tell one series of a folder from another (SeriesDescription, free text a technologist types, is not read)
_SERIES_TAGS = ("SeriesInstanceUID", "SeriesNumber", "ImageType", "Modality")
# technical tags that tell the volumes of one series apart when it holds several images at each slice position (echoes,
# time points); read to name them and to pick one (:func:`_pick_stacked_volume`)
_STACK_TAGS = ("EchoNumbers", "TemporalPositionIdentifier", "AcquisitionNumber")
_TAG_NUMBER = re.compile(r"-?\d+(\.\d*)?")  # a _STACK_TAGS value that orders (and is listed) as a number
_MAX_SERIES_LISTED = 8
# What is read of each slice: the whitelist, the pixel-format tags and the series tags; PixelData is deferred (its offset
# noted, its bytes read when a chosen slice's pixels are used)
_SLICE_TAGS = (*DICOM_SAFE_TAGS, "PixelData", "BitsAllocated", "BitsStored", "PixelRepresentation", "SamplesPerPixel",
               "PhotometricInterpretation", "HighBit", "TransferSyntaxUID", "NumberOfFrames", *_SERIES_TAGS, *_STACK_TAGS)
_DEFER_PIXELS = 1024  # bytes: larger element values (a slice's pixel data) are read only when used


class _DicomHeaders:
    """A DICOM folder's slice headers, read once (on first use) for both the header check (:func:`probe_volume`) and the
    reader (:func:`load_volume`): each file is parsed once, its pixel data left in the file until the chosen series'
    slices are stacked (pydicom's deferred read). Files that are not DICOM are skipped, a multi-frame file refused."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._slices: list | None = None

    def slices(self) -> list:
        if self._slices is None:
            import pydicom

            slices = []
            for f in sorted(x for x in self.folder.iterdir() if x.is_file() and not x.name.startswith(".")):
                try:
                    ds = pydicom.dcmread(str(f), defer_size=_DEFER_PIXELS, specific_tags=list(_SLICE_TAGS))
                except Exception:  # noqa: BLE001 - non-DICOM files in the folder are skipped
                    continue
                _refuse_multiframe(ds, self.folder)
                slices.append(ds)
            self._slices = slices
        return self._slices

    def placed(self) -> list:
        """The slices with a position and a size: what the header check, the series listing and the volume count read."""
        return [ds for ds in self.slices() if "ImagePositionPatient" in ds and "Rows" in ds]



def _series_hash_of(ds, folder: Path) -> str:
    """The short hash a series is named by in outputs (:attr:`Volume.series_hash`, ``series-<hash>``), in the listing of a
    folder's series and in ``--series``: one function, so the listed hash is the one the outputs carry."""
    return hashlib.sha256(str(getattr(ds, "SeriesInstanceUID", folder.name)).encode()).hexdigest()[:12]


def _series_number(group: list) -> str:
    return str(getattr(group[0], "SeriesNumber", "") or "").strip()


def _describe_series(group: list, folder: Path) -> str:
    """One series as the refusal and :func:`list_dicom_series` name it: ``series-<hash> (N slice(s) of RxC, Modality
    LOCALIZER, SeriesNumber S)`` — technical tags only, no patient field, no free text."""
    first = group[0]
    kind = " LOCALIZER" if "LOCALIZER" in [str(x).upper() for x in (getattr(first, "ImageType", None) or [])] else ""
    num = f", SeriesNumber {_series_number(group)}" if _series_number(group) else ""
    return (f"series-{_series_hash_of(first, folder)} ({len(group)} slice(s) of {getattr(first, 'Rows', '?')}x{getattr(first, 'Columns', '?')}"
            f"{', ' + str(first.Modality) if getattr(first, 'Modality', '') else ''}{kind}{num})")


def _series_groups(slices: list) -> list[list]:
    """A folder's slices grouped by SeriesInstanceUID, most slices first: the order the refusal and :func:`list_dicom_series` list them."""
    groups: dict[str, list] = {}
    for s in slices:
        groups.setdefault(str(getattr(s, "SeriesInstanceUID", "")), []).append(s)
    return sorted(groups.values(), key=len, reverse=True)


def list_dicom_series(folder: str | Path, headers: _DicomHeaders | None = None) -> list[tuple[str, str]]:
    """The series of a DICOM folder, from the slices' headers (no pixel data), as ``(series-<hash>, description)`` in the
    order a refusal lists them (most slices first): the hash is what ``load_volume(series=...)`` / ``infer --series``
    take, the description what :func:`_pick_series` prints. Read by :class:`_DicomHeaders`, as the readers read a folder
    (``headers``: ones already read, :class:`DicomFolder`)."""
    folder = Path(folder)
    slices = (headers or _DicomHeaders(folder)).placed()
    return [(f"series-{_series_hash_of(g[0], folder)}", _describe_series(g, folder)) for g in _series_groups(slices)]


class DicomFolder:
    """A DICOM folder whose slice headers are read once (:class:`_DicomHeaders`) for everything asked of it: its series
    (:meth:`series`, as :func:`list_dicom_series` lists them) and any of them as a :class:`Volume` (:meth:`load`, as
    ``load_volume(folder, series=...)`` reads it). The dashboard's upload of several series lists and converts them all
    from one parse of each file; a separate call of each function parses every file again."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self._headers = _DicomHeaders(self.folder)

    def series(self) -> list[tuple[str, str]]:
        return list_dicom_series(self.folder, headers=self._headers)

    def load(self, series: str | None = None, volume: int | None = None) -> Volume:
        return load_volume(self.folder, series=series, volume=volume, headers=self._headers)

    def volume_count(self, series: str | None = None) -> int | None:
        """How many volumes the series (``series``: as :meth:`load` picks it) holds, when it holds several images at every slice
        position that a tag tells apart (multi-echo, dynamic); None for a 3D series. A folder of several series without
        ``series`` is refused listing them, as :meth:`load` refuses it."""
        with _read_errors_named(self.folder):  # as load_volume names them (a slice without ImageOrientationPatient, ...)
            slices = self._headers.placed()
            if not slices:
                return None
            stack = _stack_layout(_pick_series(slices, self.folder, series))
        return stack[0] if stack is not None and stack[2] is not None else None


def _pick_series(slices: list, folder: Path, series: str | None) -> list:
    """The slices of the one series to read from a folder's slices. A folder holding several (a localizer beside
    the axial series, pre- and post-contrast) was refused only as 'holds 2 DICOM series'; which to read is the
    user's choice, so several series are refused listing each one — ``series-<hash>``, slice count, size,
    SeriesNumber, LOCALIZER when ImageType says so; no patient field, no free text — and ``series`` (that hash,
    or the SeriesNumber) picks one."""
    listed = _series_groups(slices)
    if series is None and len(listed) == 1:
        return slices
    listing = "; ".join(_describe_series(g, folder) for g in listed[:_MAX_SERIES_LISTED]) + (
        f"; and {len(listed) - _MAX_SERIES_LISTED} more" if len(listed) > _MAX_SERIES_LISTED else "")
    if series is None:
        raise MedicalInputError(f"{folder}: holds {len(listed)} DICOM series: {listing}; pick one with --series series-<hash> or --series "
                                "<SeriesNumber> (infer, score), or put one series per folder")
    want = str(series).strip()
    key = want.lower().removeprefix("series-")

    def by_hash() -> list:
        return [g for g in listed if _series_hash_of(g[0], folder).startswith(key)] if re.fullmatch(r"[0-9a-f]{6,12}", key) else []

    if want.lower().startswith("series-") or not want.isdigit():
        chosen = by_hash()
    else:  # a SeriesNumber; a hash prefix that happens to be all digits when no series has that number
        chosen = [g for g in listed if _series_number(g).isdigit() and int(_series_number(g)) == int(want)] or by_hash()
    if len(chosen) != 1:
        how = "matches none" if not chosen else f"matches {len(chosen)}"
        raise MedicalInputError(f"--series {plain(series)}: {how} of the {len(listed)} DICOM series in {folder}: {listing}; expected one series-<hash> "
                                "or SeriesNumber of these" + (" (use the series-<hash>: SeriesNumbers repeat)" if chosen else ""))
    return chosen[0]


def _stack_layout(slices: list) -> tuple[int, int, str | None, list[str]] | None:
    """For one series' slices holding the same number k > 1 of images at every slice position (a multi-echo, dynamic or
    diffusion acquisition stored as one classic series): (k, number of positions, the tag that tells the k volumes apart —
    each of its k values once at every position —, its values in order); the tag None when none does. None for one image per
    position, or for irregular repeats (the reader names duplicate positions)."""
    if len(slices) < 2:
        return None
    iop = np.asarray(slices[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    z = np.round([float(np.asarray(s.ImagePositionPatient, dtype=float) @ normal) for s in slices], 3)
    positions, counts = np.unique(z, return_counts=True)
    k = int(counts.max())
    if k < 2 or not np.all(counts == k):
        return None
    for tag in _STACK_TAGS:
        values = [_tag_text(s, tag) for s in slices]
        distinct = set(values)
        if len(distinct) != k or "" in distinct:
            continue
        if all(len({zi for zi, v in zip(z, values) if v == want}) == len(positions) for want in distinct):  # each value once per position
            return k, len(positions), tag, sorted(distinct, key=lambda v: (float(v), v) if _TAG_NUMBER.fullmatch(v) else (float("inf"), v))
    return k, len(positions), None, []


def _tag_text(ds, tag: str) -> str:
    return str(getattr(ds, tag, "") or "").strip()


def _pick_stacked_volume(slices: list, folder: Path, volume: int | None) -> list:
    """The slices of one volume of a series holding several images at each slice position (:func:`_stack_layout`): ``volume``
    is its index in the order of the tag that tells them apart (EchoNumbers, TemporalPositionIdentifier, AcquisitionNumber).
    Such a series counted as a grid k times as deep in the header check, then read as 'duplicate slice positions'; without
    ``volume`` it is refused naming k and the tag, as a 4D NIfTI is. A series of one image per position is returned whole
    (``volume`` refused)."""
    stack = _stack_layout(slices)
    if stack is None:
        if volume is not None:
            raise MedicalInputError(f"--volume {plain(volume)}: {folder} is a 3D series (one image at each slice position), not a 4D "
                                    "series; leave --volume out")
        return slices
    k, n_pos, tag, ordered = stack
    if tag is None:
        instances = [_tag_text(s, "InstanceNumber") for s in slices]
        if "" not in instances and len(set(instances)) < len(instances):  # the same images twice, not two volumes
            raise MedicalInputError(f"{folder}: holds each of its {n_pos} slices {k} times, under the same InstanceNumbers (copies of "
                                    "the same files?); keep one copy of each slice file in the folder")
        raise MedicalInputError(f"{folder}: {k} images at each of its {n_pos} slice positions, and no EchoNumbers, "
                                "TemporalPositionIdentifier or AcquisitionNumber tells them apart; put each volume's slices in a folder "
                                "of their own, or convert the series to NIfTI (e.g. dcm2niix)")
    listed = ", ".join(ordered if all(_TAG_NUMBER.fullmatch(v) for v in ordered) else [plain(v) for v in ordered])
    if volume is None:
        raise MedicalInputError(f"{folder}: {k} images at each of its {n_pos} slice positions ({tag} {listed}): a multi-echo, dynamic or "
                                f"diffusion series holds {k} volumes, one per echo or time point; pick one with --volume 0..{k - 1} (in "
                                f"{tag} order; infer, score), or put each volume's slices in a folder of their own")
    if not 0 <= int(volume) < k:
        raise MedicalInputError(f"--volume {plain(volume)}: {folder} holds {k} volumes ({tag} {listed}); expected 0..{k - 1}")
    want = ordered[int(volume)]
    return [s for s in slices if _tag_text(s, tag) == want]


def _decoder_packages(ts) -> str:
    """The pip packages that would decode transfer syntax ``ts``, from pydicom's own list of its decoders' missing dependencies."""
    try:
        from pydicom.pixels import get_decoder

        missing = get_decoder(ts).missing_dependencies
    except Exception:  # noqa: BLE001 - no decoder at all in this pydicom
        return "a DICOM toolkit that reads it (e.g. python-gdcm)"
    options = []
    for entry in missing:
        names = [n for n in re.findall(r"([A-Za-z][\w.-]*)(?:>=|==|$)", entry.split(" - requires ", 1)[-1]) if n not in ("numpy", "and")]
        names = ["python-gdcm" if n == "gdcm" else n for n in names]
        if names:
            options.append(" ".join(dict.fromkeys(names)))
    return " or ".join(f"pip install {o}" for o in options) if options else "a DICOM toolkit that reads it (e.g. python-gdcm)"


def _transfer_syntax(ds):
    from pydicom.uid import UID

    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    return UID(str(ts)) if ts else None


def _check_decodable(slices: list, folder: Path) -> None:
    """A compressed series (JPEG-LS, JPEG Lossless, HTJ2K, ...) whose decoder is not installed failed with pydicom's
    multi-line 'all plugins are missing dependencies' list, cut off mid-word. Refused from the headers, in one line
    naming the transfer syntax and the packages that decode it."""
    seen = set()
    for s in slices:
        ts = _transfer_syntax(s)
        if ts is None or ts in seen:
            continue
        seen.add(ts)
        if not ts.is_compressed:
            continue
        try:
            from pydicom.pixels import get_decoder

            available = get_decoder(ts).is_available
        except Exception:  # noqa: BLE001 - pydicom has no decoder for it at all
            available = False
        if not available:
            raise MedicalInputError(f"{folder}: its slices are compressed as {ts.name} (transfer syntax {ts}), which no installed DICOM decoder "
                                    f"reads; install a decoder ({_decoder_packages(ts)}) or export the series uncompressed")


_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  "


def _jp2_walk_never_ends(frame: bytes) -> bool:
    """pydicom (3.0.x, ``get_j2k_parameters``) walks a JP2-wrapped frame's boxes to its codestream box by their lengths: a
    box of length 0 before it (damaged data: zeroed bytes, a cut transfer) makes that walk loop forever — ``infer`` hung
    at 100 % CPU. True for such a frame (the same walk, stopping where pydicom's would not)."""
    if not frame.startswith(_JP2_SIGNATURE):
        return False
    offset = 12
    while offset < len(frame):
        if frame[offset + 4:offset + 8] == b"jp2c":
            return False
        length = int.from_bytes(frame[offset:offset + 4], byteorder="big")
        if length == 0:
            return True
        offset += length
    return False


def _pixels(ds, folder: Path) -> np.ndarray:
    """A slice's pixels; a compressed slice a decoder fails on (damaged data, a bit depth it does not take) is one line
    naming the transfer syntax, and JP2 data pydicom's parser would never finish is refused before it is handed over."""
    ts = _transfer_syntax(ds)
    if ts is not None and ts.is_compressed and "PixelData" in ds:
        try:
            from pydicom.encaps import generate_frames

            frame = next(generate_frames(ds.PixelData, number_of_frames=1))
        except Exception:  # noqa: BLE001 - not encapsulated as expected: the decoder names that below
            frame = b""
        if _jp2_walk_never_ends(frame):
            raise MedicalInputError(f"{folder}: a slice's {ts.name} pixel data (transfer syntax {ts}) is damaged: a JP2 box of length 0 "
                                    "before its codestream (pydicom's reader would never finish it); re-export or re-transfer the series")
    try:
        return ds.pixel_array
    except Exception as e:  # noqa: BLE001 - the decoder's error, made one line
        if ts is None or not ts.is_compressed:
            raise
        raise MedicalInputError(f"{folder}: a slice's {ts.name} pixel data (transfer syntax {ts}) cannot be decoded ({one_line(e, join=True)}); "
                                f"the file may be damaged, or the installed decoder cannot read it (other decoders: {_decoder_packages(ts)})") from None


def _refuse_missing_slices(gaps: np.ndarray, slices: list, folder: Path) -> None:
    """Slices sorted along the normal whose steps are whole multiples of the series' step: slices are missing (an
    incomplete transfer, a deleted file). Named — where, how many, between which InstanceNumbers — instead of an
    'uneven spacing' to resample: resampling would fill the hole with made-up anatomy."""
    step = float(np.min(gaps))
    ratio = gaps / step
    whole = np.abs(ratio - np.round(ratio)) < 0.02
    if step <= 0 or not np.all(whole):
        return
    holes = np.flatnonzero(np.round(ratio) > 1)
    if not len(holes):
        return
    missing = int(np.sum(np.round(ratio[holes]) - 1))

    def inst(s) -> str:
        return str(getattr(s, "InstanceNumber", "?"))

    where = "; ".join(f"{int(round(ratio[i])) - 1} after slice {i + 1} (InstanceNumber {inst(slices[i])} -> {inst(slices[i + 1])}, "
                      f"a {gaps[i]:.3g} mm gap)" for i in holes[:4]) + ("; ..." if len(holes) > 4 else "")
    raise MedicalInputError(f"{folder}: {missing} slice(s) missing from the DICOM series of {len(slices)} slices stepping {step:.3g} mm: {where}; "
                            "stacking them would place every later slice wrong — re-export or re-transfer the whole series")
