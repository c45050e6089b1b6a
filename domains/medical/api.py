"""The medical page's contract with this domain (imported statically by ``dashboards/views/medical.py``).

Everything the page shows comes through these functions; they return the dataclasses defined
here, never the domain's internal objects, so the page does not depend on how the domain is laid
out. Nothing here trains.

    run = model_run(run_dir)                     # ModelRun: .has_model .task .class_names
    cases = list_cases()                         # [Case(id, image, label, dataset, split)]
    scan = check_scan(run_dir, path)             # CheckedScan: read and checked as infer checks it (MedicalInputError)
    dicom_series(folder)                         # [DicomSeries(id, description)] when a folder holds several, as infer lists them
    volume_count(path)                           # volumes of a 4D NIfTI/NRRD (None: 3D), as infer --volume counts them
    dicom_to_nifti(folder, dst, series=...)      # one series (infer --series); scan_volume_to_nifti(path, dst, k): one volume (--volume)
    folder = DicomFolder(raw)                    # headers read once: folder.series(), folder.to_nifti(dst, series=...) for each
    model = load_segmenter(run_dir)              # LoadedSegmenter
    seg = model.predict(cases[0].image)          # Segmentation: .image .mask .class_names .volumes_ml .ood ...
    seg = model.predict(scan)                    # the checked voxels themselves: the file is not read again
    dice_per_class(seg.mask, load_label(cases[0].label), seg.class_names)
    sal = structure_saliency(model, cases[0].image, "Hippocampus", slice_index=40)  # StructureSaliency: .map on seg.image's grid

(``Case`` also reads like the dict it used to be: ``case["id"]``.)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from domains.medical.metrics import dice_per_class as _dice_per_class
from domains.medical.data import read_task_meta
from domains.medical.explain import StructureSaliency, structure_occlusion
from domains.medical.io import Volume, read_input_for_model
from domains.medical.predict import Segmenter
from domains.medical.predict import volumes_ml as _volumes_ml
from domains.medical.qc import QualityCheck
from domains.medical.validation import MedicalInputError

__all__ = ["Case", "ModelRun", "OodFlag", "Segmentation", "LoadedSegmenter", "ScanInfo", "CheckedScan", "DicomSeries", "list_cases", "model_run", "check_scan",
           "load_segmenter", "load_label", "dice_per_class", "volumes_ml", "dicom_to_nifti", "dicom_series", "volume_count", "scan_volume_to_nifti",
           "DicomFolder",
           "MedicalInputError",
           "StructureSaliency", "structure_saliency"]


@dataclass(frozen=True)
class Case:
    """A prepared case: its image, its label when it has one, the data set and split it belongs to."""

    id: str
    image: str
    label: str | None
    dataset: str
    split: str | None = None

    def __getitem__(self, key: str):  # the dict this used to be
        return getattr(self, key)

    def get(self, key: str, default=None):
        return getattr(self, key, default)


@dataclass(frozen=True)
class ModelRun:
    """What the page needs to know about a medical run before loading it."""

    path: Path
    has_model: bool
    task: str | None  # the prepared data set it was trained on
    class_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class OodFlag:
    """The out-of-distribution guard's verdict on one segmentation (issue 14.5)."""

    flagged: bool
    reasons: tuple[str, ...] = ()
    mean_confidence: float | None = None  # mean foreground probability, when the model reports it


@dataclass
class Segmentation:
    """One input segmented by one model, in canonical (RAS) orientation."""

    image: np.ndarray
    mask: np.ndarray
    class_names: list[str]
    volumes_ml: dict[str, float]
    affine: np.ndarray
    spacing: tuple[float, float, float]  # along the canonical axes of ``image``/``mask``
    ood: OodFlag | None = None  # None: this model's domain code has no guard

    def to_nifti_bytes(self) -> bytes:
        """The mask as a NIfTI file (canonical orientation, this segmentation's affine)."""
        import nibabel as nib

        img = nib.Nifti1Image(np.asarray(self.mask).astype(np.uint8), self.affine)
        img.set_qform(self.affine, code=1)
        img.set_sform(self.affine, code=1)
        return img.to_bytes()


@dataclass(frozen=True)
class ScanInfo:
    """What :func:`dicom_to_nifti` wrote: the volume's grid (no patient field)."""

    path: Path
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]


@dataclass(frozen=True)
class DicomSeries:
    """One series of a DICOM folder holding several: ``id`` (``series-<hash>``, what ``infer --series`` and
    :func:`dicom_to_nifti`'s ``series`` take) and ``description`` (slices, size, Modality, LOCALIZER, SeriesNumber —
    as ``infer``'s refusal lists it; no patient field, no SeriesDescription)."""

    id: str
    description: str


@dataclass(frozen=True)
class CheckedScan:
    """A scan :func:`check_scan` read and found fit for a run's model. Pass it to :meth:`LoadedSegmenter.predict`
    (or :func:`structure_saliency`) instead of its path: the model segments these voxels, the file is not read again."""

    source: str
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    volume: Volume = field(repr=False, compare=False)


@dataclass
class LoadedSegmenter:
    """A trained model ready to segment."""

    run_dir: Path
    class_names: list[str]
    segmenter: Segmenter = field(repr=False)

    def predict(self, source: str | Path | CheckedScan) -> Segmentation:
        """Segment a volume file, a DICOM series folder, or a scan :func:`check_scan` has already read."""
        r = self.segmenter.predict(source.volume if isinstance(source, CheckedScan) else str(source))
        spacing = tuple(float(v) for v in np.sqrt((np.asarray(r.affine)[:3, :3] ** 2).sum(axis=0)))  # canonical axes
        return Segmentation(image=np.asarray(r.image), mask=np.asarray(r.mask), class_names=list(r.class_names),
                            volumes_ml={str(k): float(v) for k, v in r.volumes_ml.items()}, affine=np.asarray(r.affine),
                            spacing=spacing, ood=_ood(r.ood))


def list_cases() -> list[Case]:
    """Every prepared case of the offline tasks (tasks not prepared here are skipped)."""
    from core.data import dataset_dir
    from domains.medical.data import DATASETS, read_msd_task

    out = []
    for spec in DATASETS:
        try:
            task = read_msd_task(dataset_dir(spec.name))
        except FileNotFoundError:  # not prepared here
            continue
        for c in task.cases():
            out.append(Case(id=str(c["id"]), image=str(c["image"]), label=str(c["label"]) if c.get("label") else None,
                            dataset=spec.name, split=c.get("split")))
    return out


def _read_json(p: Path) -> dict:
    try:
        data = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def model_run(run_dir: str | Path) -> ModelRun:
    """Whether ``run_dir`` holds a trained model, and the task it learned."""
    run_dir = Path(run_dir)
    task_meta, cfg = _read_json(run_dir / "task.json"), _read_json(run_dir / "config.json")
    task = task_meta.get("task") or cfg.get("task")
    names = tuple(str(n) for n in task_meta.get("class_names", ()))
    return ModelRun(path=run_dir, has_model=(run_dir / "best.safetensors").is_file(), task=str(task) if task else None, class_names=names)


def check_scan(run_dir: str | Path, source: str | Path) -> CheckedScan:
    """Refuse (``MedicalInputError`` naming ``source``) what ``infer`` refuses before loading the model: a grid too
    large once resampled, 4D or NaN voxels, a damaged file, a blank image, a scan of another modality than the
    run's model learned. Reads only the run's ``task.json``, not its weights. Returns the scan as read, which
    :meth:`LoadedSegmenter.predict` takes as it is (as ``infer`` passes its checked volume on): read once."""
    vol = read_input_for_model(source, read_task_meta(run_dir))
    return CheckedScan(source=str(source), shape=vol.shape, spacing=vol.spacing, volume=vol)


def load_segmenter(run_dir: str | Path, *, lcc: bool = False, tta: bool = False, crop: bool = True) -> LoadedSegmenter:
    """The run's model; ``lcc``: keep the largest connected component of each structure; ``tta``:
    average with the left-right mirrored input (lateral labels swapped) — issue 14.4; ``crop``: the
    sliding window over the non-zero box only, as ``infer`` does by default."""
    seg = Segmenter.from_run(run_dir, lcc=lcc, tta=tta, crop=crop)
    return LoadedSegmenter(run_dir=Path(run_dir), class_names=list(seg.class_names), segmenter=seg)


def structure_saliency(model: LoadedSegmenter, source: str | Path | CheckedScan, structure: str, slice_index: int | None = None, axis: int = 2,
                       mask_size: int | None = None) -> StructureSaliency:
    """Occlusion sensitivity of ``structure`` (``domains.medical.explain``): a float map on the grid of
    ``Segmentation.image`` (canonical), NaN outside the patch explained around canonical slice
    ``slice_index`` along ``axis``; positive where hiding the image lowers the model's belief in the structure."""
    return structure_occlusion(model.segmenter, source.volume if isinstance(source, CheckedScan) else source, structure,
                               slice_index=slice_index, axis=axis, mask_size=mask_size)


def _ood(check: QualityCheck | None) -> OodFlag | None:
    """The out-of-distribution guard's verdict (``domains.medical.qc``) as the page reads it."""
    if check is None:
        return None
    conf = None if check.mean_confidence is None else float(check.mean_confidence)
    return OodFlag(flagged=bool(check.flagged), reasons=tuple(str(r) for r in check.reasons), mean_confidence=conf)


def dice_per_class(mask: np.ndarray, label: np.ndarray, class_names: list[str]) -> dict[str, float]:
    """Dice of every foreground class (NaN when a class is absent from both)."""
    return {str(k): float(v) for k, v in _dice_per_class(mask, label, class_names).items()}


def volumes_ml(mask: np.ndarray, spacing: tuple[float, ...], class_names: list[str]) -> dict[str, float]:
    """Per-structure volumes (mL) of a label mask, computed as a segmentation's are."""
    return {str(k): float(v) for k, v in _volumes_ml(mask, spacing, class_names).items()}


def load_label(path: str | Path) -> np.ndarray:
    """A label volume in canonical (RAS) orientation — the same orientation as ``Segmentation.mask``."""
    import nibabel as nib

    from domains.medical.io import load_volume
    from domains.medical.validation import check_label_array

    vol = load_volume(path, dtype=None)
    lab = check_label_array(vol.data, path)
    img = nib.as_closest_canonical(nib.Nifti1Image(lab.astype(np.int16), vol.affine))
    out = np.asanyarray(img.dataobj)
    if out.ndim != 3:
        raise MedicalInputError(f"{path}: expected a 3D label volume")
    return out.astype(np.int16)


class DicomFolder:
    """A DICOM folder (an upload's extracted ZIP) whose headers are read once for all that is asked of it — its series
    (:meth:`series`) and any of them written as NIfTI (:meth:`to_nifti`) — as ``infer`` reads a folder once for its check
    and its reader. :func:`dicom_series` and :func:`dicom_to_nifti` each read the folder anew."""

    def __init__(self, src: str | Path):
        from domains.medical.io import DicomFolder as _Reader

        self.path = Path(src)
        self._reader = _Reader(self.path)

    def series(self) -> list[DicomSeries]:
        """The folder's series from its headers (no pixels), most slices first, as ``infer`` lists them when a folder
        holds several; one entry for a folder of one series."""
        return [DicomSeries(id=i, description=d) for i, d in self._reader.series()]

    def volume_count(self, series: str | None = None) -> int | None:
        """How many volumes the series (an id of :meth:`series`, as ``infer --series``) holds when it has several images at every
        slice position (multi-echo, dynamic), as ``infer --volume`` counts them; None for a 3D series, or one whose headers do
        not tell (:meth:`to_nifti` names its problem)."""
        try:
            return self._reader.volume_count(series)
        except Exception:  # noqa: BLE001 - the read names it
            return None

    def to_nifti(self, dst: str | Path, series: str | None = None, volume: int | None = None) -> ScanInfo:
        """One series written to ``dst`` as NIfTI: voxels, geometry and the series' Modality (so the model's modality check
        still sees it) — the reader never takes patient fields out of the DICOM files. ``series``: which series of a folder
        holding several (an id of :meth:`series`, as ``infer --series``); without it such a folder is refused listing them.
        ``volume``: which volume of a series of several images at each position (:meth:`volume_count`, as ``infer --volume``)."""
        from domains.medical.io import save_volume_nifti

        vol = self._reader.load(series=series, volume=volume)
        dst = save_volume_nifti(vol, dst)
        return ScanInfo(path=dst, shape=vol.shape, spacing=vol.spacing)


def dicom_series(src: str | Path) -> list[DicomSeries]:
    """The series of a DICOM folder (:meth:`DicomFolder.series`)."""
    return DicomFolder(src).series()


def volume_count(path: str | Path) -> int | None:
    """How many volumes a 4D NIfTI or NRRD holds (a NIfTI's 4th axis, a NRRD's list/time axis: time points, an MSD image's
    channels), from its header, as ``infer --volume`` counts them; None for a 3D volume (axes of length 1 do not count),
    another kind of file or a header that does not read (:func:`check_scan` names that problem)."""
    from domains.medical.io import volume_count as count

    return count(path)


def dicom_to_nifti(src: str | Path, dst: str | Path, series: str | None = None) -> ScanInfo:
    """A DICOM series folder (or a single slice) written to ``dst`` as NIfTI (:meth:`DicomFolder.to_nifti`)."""
    return DicomFolder(src).to_nifti(dst, series=series)


def scan_volume_to_nifti(src: str | Path, dst: str | Path, volume: int) -> ScanInfo:
    """Volume ``volume`` (0-based, along the 4th axis; a NRRD's list/time axis) of a 4D NIfTI or NRRD written to ``dst`` as a 3D NIfTI on the same grid —
    read as ``infer --volume`` reads it (that volume alone, scaled); the modality the source's header names is kept."""
    from domains.medical.io import load_volume, save_volume_nifti

    vol = load_volume(src, volume=volume)
    dst = save_volume_nifti(vol, dst)
    return ScanInfo(path=dst, shape=vol.shape, spacing=vol.spacing)
