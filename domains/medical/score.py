"""Segment a folder of volumes in batch: ``python -m domains.medical.score --input DIR``.

Every entry of ``--input`` (NIfTI/NRRD files, DICOM series sub-folders) is one work item of the
core scoring engine (``core.scoring``): masks go to ``<run>/masks/<id>_mask.nii.gz`` on each input's
own grid, one row per volume (shape, spacing, mL per structure, mask path) to partitioned Parquet
under ``--out`` (default ``<run>/scores``). Unreadable or invalid inputs (non-image files, NaN voxels,
4D data, …) are quarantined with the reason and reported; the rest are kept. A rerun into the same
``--out`` skips finished chunks. ``--engine ray --workers N`` scores on a Ray actor pool.

Default input: the images of the trained run's task (training and held-out), offline.
Privacy: for DICOM series only geometry/modality tags are read; rows carry the folder name you
chose and a hash of the series UID — never patient tags.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from core.cli import run_cli
from core.config import DeviceConfig, ResumeConfig, RunConfig, SeedConfig, TrackingConfig
from core.runs import Run, latest_run_dir
from domains.medical.infer import read_task_meta
from core.scoring import Scorer, ScoringConfig, WorkItem, file_items, read_output, read_quarantine, run_job_from_config
from domains.medical.validation import MedicalInputError

__all__ = ["SegmentationScorer", "ScoreConfig", "score", "folder_items", "main"]


class SegmentationScorer(Scorer):
    """One volume → its mask file + one row of volumes in mL."""

    version = "1"

    def __init__(self, model_run: str, mask_dir: str, device: str = "cpu"):
        self.model_run, self.mask_dir, self.device = str(model_run), str(mask_dir), device

    def load(self) -> None:
        from domains.medical.infer import Segmenter

        self._seg = Segmenter.from_run(self.model_run, device=self.device)

    def score(self, item: WorkItem) -> pd.DataFrame:
        from domains.medical.infer import volumes_ml
        from domains.medical.io import load_volume, save_mask_like

        vol = load_volume(item.path)
        mask = self._seg.predict_volume(vol)
        safe_id = item.id.replace("/", "__")
        out = save_mask_like(mask, vol, Path(self.mask_dir) / f"{safe_id}_mask.nii.gz")
        row = {"case": item.id, "format": vol.format, "series_hash": vol.series_hash,
               "shape": list(vol.shape), "spacing_mm": [round(s, 4) for s in vol.spacing], "mask_path": str(out)}
        row.update({f"ml_{k}": v for k, v in volumes_ml(mask, vol.spacing, self._seg.class_names).items()})
        return pd.DataFrame([row])


def folder_items(folder: str | Path) -> list[WorkItem]:
    """Every non-hidden entry of ``folder`` (files and DICOM sub-folders) becomes one item, so that
    bad files are reported rather than silently ignored."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MedicalInputError(f"{folder}: not a folder of volumes")
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith((".", "_")))
    if not entries:
        raise MedicalInputError(f"{folder}: empty folder")
    return [WorkItem(id=p.name, path=str(p)) for p in entries]


@dataclass
class ScoreConfig(ScoringConfig, TrackingConfig, SeedConfig, DeviceConfig, ResumeConfig, RunConfig):
    input: str | None = field(default=None, metadata={"help": "folder of volumes (default: the trained task's imagesTr + imagesTs)"})
    model_run: str | None = field(default=None, metadata={"help": "trained run directory (default: <runs-dir>/medical/latest)"})
    track: bool = field(default=False, metadata={"help": "log to MLflow"})


def score(cfg: ScoreConfig) -> Path:
    model_run = Path(cfg.model_run) if cfg.model_run else latest_run_dir("medical", cfg.runs_dir)
    if cfg.input:
        items = folder_items(cfg.input)
    else:
        from domains.medical.data import read_msd_task, task_dir

        task = read_msd_task(task_dir(read_task_meta(model_run)["task"]))
        # ids relative to the task root: imagesTr/x and imagesTs/x may share a file name
        items = file_items([c["image"] for c in task.training + task.test], root=task.root)
    with Run.start("medical", cfg, kind="job") as run:
        scorer = SegmentationScorer(str(model_run.resolve()), str(run.path("masks")), device="cpu" if cfg.device == "auto" else cfg.device)
        summary = run_job_from_config(items, scorer, cfg, default_out=run.dir / "scores")
        out = Path(cfg.out or run.dir / "scores")
        df = read_output(out)
        bad = read_quarantine(out)
        if len(df):
            from core.io import atomic_write_text

            atomic_write_text(run.path("volumes.csv"), df.drop(columns=[c for c in df.columns if c in ("shape", "spacing_mm")]).to_csv(index=False))
            print(df[["case"] + [c for c in df.columns if c.startswith("ml_")]].to_string(index=False))
        for _, r in bad.iterrows():
            print(f"skipped {r['item_id']}: {r['reason']}", file=sys.stderr)
        run.finish({"scored": int(len(df)), "quarantined": int(len(bad)), "summary": summary.line()})
    return run.dir


def main(argv: list[str] | None = None) -> int:
    return run_cli(ScoreConfig, score, argv, doc=__doc__, prog="python -m domains.medical.score", user_errors=(MedicalInputError,))


if __name__ == "__main__":
    sys.exit(main())
