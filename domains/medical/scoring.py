"""Batch segmentation on the core scoring engine (``core.scoring``): one volume → its mask file and one
row (shape, spacing, mL per structure, the out-of-distribution check).

Privacy: a folder entry's name may be a patient's name or MRN (``DOE^JOHN``, ``MRN12345678``). Every
item is therefore keyed by :func:`domains.medical.io.content_id` — a hash of the entry's bytes — and
only that id reaches rows, mask names, quarantine entries, the job's own files, logs and MLflow; the
paths travel to the workers inside the scorer (not in the job description). Error messages of
quarantined items are rewritten to name the id, never the path. The mapping id → entry name exists
only if asked for (:func:`write_name_map`, ``score --name-map``), as a file beside the inputs.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from core.io import atomic_write_text
from core.scoring import Scorer, ScoringError, WorkItem
from core.scoring.job import read_job
from domains.medical.io import content_id, is_dicom_file, data_files
from domains.medical.validation import MedicalInputError

__all__ = ["SegmentationScorer", "folder_entries", "work_items", "write_name_map", "NAME_MAP_FILE", "sanitize", "recorded_mask_dir", "read_item"]


NAME_MAP_FILE = ".dlsuite-ids.csv"


def folder_entries(folder: str | Path) -> list[Path]:
    """Every non-hidden entry of ``folder`` (files and DICOM sub-folders), so that bad files are
    reported rather than silently ignored — except the data file(s) of a header beside them (a detached NRRD's data file, an
    Analyze/NIfTI pair's .img: part of that volume)."""
    if not str(folder).strip():
        raise MedicalInputError("--input is empty; give a folder of volumes")
    folder = Path(folder)
    if not folder.is_dir():
        raise MedicalInputError(f"{folder}: not a folder of volumes")
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith((".", "_")))
    if not entries:
        raise MedicalInputError(f"{folder}: empty folder")
    # a DICOM series folder given as the batch: each slice was an item, quarantined one by one as 'a single DICOM file is one slice'
    files = [e for e in entries if e.is_file()]
    if len(files) >= 2 and len(files) == len(entries) and all(f.name.lower().endswith(".dcm") or is_dicom_file(f) for f in files):
        raise MedicalInputError(f"{folder}: holds {len(files)} DICOM files and no sub-folder: it is a series (its slices), not a folder of "
                                f"inputs; segment it with `python -m domains.medical.infer --input {folder}`, or give score the folder "
                                "that holds one sub-folder per series")
    # the data file of a detached NRRD header (scan.nhdr + scan.raw.gz) or of an Analyze/NIfTI pair (scan.hdr + scan.img, and
    # SPM's scan.mat) is part of that volume, not an input of its own (it was quarantined as 'not a supported volume')
    belong = {f.resolve() for e in entries for f in data_files(e)}
    return [e for e in entries if e.resolve() not in belong]


def work_items(paths: list[Path]) -> tuple[list[WorkItem], dict[str, str]]:
    """(items keyed by content id, id → path). Identical inputs get ``-2``, ``-3``… suffixes in input order."""
    items, sources = [], {}
    for p in paths:
        base = content_id(p)
        i, vid = 1, base
        while vid in sources:
            i += 1
            vid = f"{base}-{i}"
        sources[vid] = str(p)
        items.append(WorkItem(id=vid))
    return items, sources


def write_name_map(folder: str | Path, sources: dict[str, str]) -> Path:
    """The opt-in mapping back to the user's names: ``<folder>/.dlsuite-ids.csv`` (id, entry), beside the
    inputs — never in the runs folder, logs or MLflow."""
    out = Path(folder) / NAME_MAP_FILE
    lines = ["id,entry"] + [f"{vid},{Path(p).name}" for vid, p in sources.items()]
    try:
        atomic_write_text(out, "\n".join(lines) + "\n")
    except OSError as e:
        raise MedicalInputError(f"--name-map: cannot write the id map beside the inputs ({e.strerror})") from None
    return out


def recorded_mask_dir(out: str | Path | None) -> str | None:
    """The mask folder that the segmentation job in ``out`` holds in its identity: jobs written before the mask
    folder left :meth:`SegmentationScorer.config` recorded it there. ``None`` for a job without it, no job or
    one that cannot be read (the job check names that file)."""
    if not out:
        return None
    try:
        scorer = read_job(out)["description"]["scorer"]
    except ScoringError:
        return None
    config = scorer.get("config")
    if scorer["class"] != f"{SegmentationScorer.__module__}.{SegmentationScorer.__qualname__}" or not isinstance(config, dict):
        return None
    return config["mask_dir"] if isinstance(config.get("mask_dir"), str) else None


def read_item(path: str | Path, series: str | None, volume: int | None, name: str | None = None) -> tuple:
    """The volume ``score`` segments for one entry, read by the reader ``infer`` uses (:func:`domains.medical.io.load_volume`)
    with the part of the batch's ``--series`` / ``--volume`` that applies to it: ``series`` for a DICOM series folder (a folder
    without that series is refused listing its series); ``volume`` for an entry holding several volumes — a 4D NIfTI/NRRD, a
    DICOM series of several images at each position (multi-echo, dynamic) — (one holding too few is refused naming how many it
    holds). Entries without that choice — 3D files and series, and files for ``--series`` — are read as they are: one batch
    mixes them. A DICOM folder's headers are read once, for the rule and the read (:class:`~domains.medical.io.DicomFolder`).
    ``name``: how a warning about the entry names it (its id). Returns (the :class:`~domains.medical.io.Volume`, the volume index
    read or None)."""
    from domains.medical.io import DicomFolder, load_volume, volume_count

    p = Path(path)
    if p.is_dir():
        folder = DicomFolder(p)
        index = volume if volume is not None and folder.volume_count(series) is not None else None
        return folder.load(series=series, volume=index), index
    index = volume if volume is not None and volume_count(p) is not None else None
    return load_volume(p, volume=index, name=name), index


def sanitize(message: str, path: str, vid: str) -> str:
    """``message`` with the input's path (and its last component) replaced by its id."""
    p = Path(path)
    names = {str(p), str(p.resolve()), p.name, str(p.parent)} | {x for f in data_files(p) for x in (str(f), f.name)}  # a pair's scan.img too
    for s in sorted(names, key=len, reverse=True):
        if s and s not in (".", "/"):
            message = message.replace(s, vid)
    return message


class SegmentationScorer(Scorer):
    """One volume → its mask file + one row of volumes in mL (+ ``ood_flag``, ``ood_reason``,
    ``mean_confidence``). ``sources`` maps item ids to paths (kept private: not part of the job's
    description on disk); items without an entry there are read from ``item.path``. ``series`` / ``volume``: the series of
    each DICOM folder, the volume of each 4D file or series to segment (:func:`read_item`); part of the job's identity when set."""

    version = "2"

    def __init__(self, model_run: str, mask_dir: str, device: str = "cpu", lcc: bool = False, tta: bool = False, crop: bool = True,
                 sources: dict[str, str] | None = None, recorded_mask_dir: str | None = None, series: str | None = None,
                 volume: int | None = None):
        self.model_run, self.mask_dir, self.device, self.lcc, self.tta, self.crop = str(model_run), str(mask_dir), device, lcc, tta, crop
        self._sources = dict(sources or {})
        self._recorded_mask_dir = recorded_mask_dir
        self._series, self._volume = series, volume

    def config(self) -> dict:
        """The job's identity: model and settings, not ``mask_dir``. The masks go to the folder of the run that
        scores them (``<run>/masks``) and each row names its own ``mask_path``; a completed run is never written
        again, so the identical command rerun into the same ``--out`` runs as ``score-<hash>-1`` — it must still
        be the same job (its chunks are skipped). ``recorded_mask_dir``: the mask folder a job folder of an
        earlier version recorded in its identity (:func:`recorded_mask_dir`), repeated so that it compares equal."""
        config = {k: v for k, v in super().config().items() if k != "mask_dir"}
        if self._recorded_mask_dir is not None:
            config["mask_dir"] = self._recorded_mask_dir
        # only when set: a job written before these flags existed (or without them) keeps its identity
        config.update({k: v for k, v in (("series", self._series), ("volume", self._volume)) if v is not None})
        return config

    def load(self) -> None:
        from domains.medical.predict import Segmenter

        self._seg = Segmenter.from_run(self.model_run, device=self.device, lcc=self.lcc, tta=self.tta, crop=self.crop)

    def score(self, item: WorkItem) -> pd.DataFrame:
        path = self._sources.get(item.id, item.path)
        try:
            return self._score(item.id, path)
        except Exception as e:  # noqa: BLE001 - the quarantine entry names the id, never the (possibly identifying) path
            raise MedicalInputError(sanitize(str(e) or type(e).__name__, path, item.id)) from None

    def _score(self, vid: str, path: str) -> pd.DataFrame:
        from domains.medical import qc
        from domains.medical.io import save_mask_like
        from domains.medical.predict import volumes_ml

        vol, index = read_item(path, self._series, self._volume, name=vid)
        pred = self._seg.segment(vol)
        safe_id = vid.replace("/", "__")
        out = save_mask_like(pred.mask, vol, Path(self.mask_dir) / f"{safe_id}_mask.nii.gz")
        vols = volumes_ml(pred.mask, vol.spacing, self._seg.class_names)
        check = qc.check(vols, pred.mean_confidence)  # the score command logs the flagged rows once, after the job
        row = {"case": vid, "format": vol.format, "series_hash": vol.series_hash,
               "shape": list(vol.shape), "spacing_mm": [round(s, 4) for s in vol.spacing], "mask_path": str(out)}
        if self._volume is not None:  # which volume of a 4D file or series was segmented (None: 3D, read whole)
            row["volume_index"] = index
        row.update({f"ml_{k}": v for k, v in vols.items()})
        row.update(check.as_row())
        return pd.DataFrame([row])
