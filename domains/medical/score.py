"""Segment a folder of volumes in batch: ``python -m domains.medical.score --input DIR``.

Every entry of ``--input`` (NIfTI/NRRD files, Analyze/NIfTI-pair ``.hdr`` files with their ``.img``, DICOM series sub-folders)
is one work item of the core scoring engine (``core.scoring``); a header's data file (``scan.img``, a detached NRRD's
``scan.raw.gz``) belongs to its item and its bytes to the item's id. Masks go to ``<run>/masks/<id>_mask.nii.gz`` (for an
Analyze 7.5 input ``<id>_mask.hdr`` + ``.img``, with its header: it stores no orientation) on each input's own grid,
one row per volume (shape, spacing, mL per structure, ``ood_flag``/``ood_reason``/``mean_confidence``,
mask path) to partitioned Parquet under ``--out`` (default ``<run>/scores``). Unreadable or invalid inputs
(non-image files, NaN voxels, …) are quarantined with the reason; the rest are kept.
``--engine ray --workers N`` scores on a Ray actor pool.

Inputs a user must choose within, as ``infer`` has them: a 4D NIfTI/NRRD (time points, an MSD image's channels), a
DICOM series of several images at each position (multi-echo, dynamic) and a DICOM folder holding several series are
quarantined naming their volumes / series and the flag; ``--volume N`` segments volume N of every 4D file or series,
``--series S`` series S (its SeriesNumber, or a series-<hash>) of every DICOM folder, read by ``infer``'s reader.
Entries of the other kinds are read as they are (3D files and series; files for ``--series``); a 4D input with too few
volumes, or a folder without that series, is quarantined naming what it holds. Rows carry ``series_hash`` (DICOM) and,
with ``--volume``, ``volume_index``.

Rerunning the identical command after a crash finishes the job: without ``--name`` the run is named
from its inputs, model and settings (``score-<hash>``), so the rerun reopens the same run folder and
output and scores only the chunks that were not committed. A completed run is never written again: the
identical command rerun after it completed starts ``score-<hash>-1``; with the same ``--out`` it reuses the
finished job there (every chunk skipped, rows and masks as the first run wrote them), without ``--out`` it
scores again into its own ``scores/`` (as finance and recommendation score do). Each row's ``mask_path``
names where its mask was written.

Privacy: ``<id>`` is a hash of each entry's bytes — folder and file names (often a patient's name or
MRN) never reach rows, masks, quarantine entries, logs or MLflow. ``--name-map`` writes the mapping
id → entry name as ``.dlsuite-ids.csv`` beside the inputs, on request only. For DICOM only
geometry/modality tags are read. Default input: the images of the trained run's task (offline).
"""

from __future__ import annotations

import sys
from pathlib import Path

from core.cli import run_cli
from core.logging import get_logger
from core.runs import Run, resolve_model_run
from domains.medical.config import ScoreConfig
from domains.medical.data import read_msd_task, read_task_meta, task_dir

__all__ = ["score", "main"]

log = get_logger("medical.score")


def score(cfg: ScoreConfig) -> Path:
    from core.io import atomic_write_text
    from core.scoring import check_scoring_items, check_scoring_job, check_scoring_out, digest_items, job_name, read_output, read_quarantine, run_job_from_config
    from domains.medical.scoring import SegmentationScorer, folder_entries, recorded_mask_dir, work_items, write_name_map

    check_scoring_out(cfg)  # a bad --out is refused before anything is loaded or created
    model_run = resolve_model_run("medical", cfg.model_run, cfg.runs_dir)
    if cfg.input is not None:  # an empty --input is refused by folder_entries, not taken as "the default task"
        entries = folder_entries(cfg.input)
    else:
        task = read_msd_task(task_dir(read_task_meta(model_run)["task"]))
        entries = [Path(c["image"]) for c in task.training + task.test]
    items, sources = work_items(entries)
    check_scoring_items(items, "--input" if cfg.input is not None else f"the images of {model_run.name}'s task",
                        "at least one volume file or DICOM series folder")  # before the job's run folder exists
    if cfg.name_map and cfg.input:
        print(f"id map (beside the inputs, not in the run): {write_name_map(cfg.input, sources)}", file=sys.stderr)
    device = "cpu" if cfg.device == "auto" else cfg.device

    def scorer(mask_dir: str, recorded: str | None) -> SegmentationScorer:
        return SegmentationScorer(str(model_run), mask_dir, device=device, lcc=cfg.lcc, tta=cfg.tta, crop=cfg.crop, sources=sources,
                                  recorded_mask_dir=recorded, series=cfg.series, volume=cfg.volume)

    def recorded_in(out: str | Path | None) -> str | None:
        """The mask folder a job in ``out`` written by an earlier version holds in its identity (--overwrite discards it)."""
        return None if cfg.overwrite else recorded_mask_dir(out)

    # the run (and so its masks/ and scores/) is named from the inputs, model and settings: a rerun finishes a killed job.
    # The name hashes them with an empty mask folder, as earlier versions did, and now also the model run's files' stamp
    # (unfinished default-named runs of earlier versions start afresh once). One stat per input file and per weights/config
    # file of the model run, once: the name, the --out check and the job share it — a model run retrained in place (same
    # name) is another job: a new name, a refused --out, never old rows
    digest = digest_items(items, model_run=model_run)
    name = job_name("score", items, scorer("", ""), cfg.items_per_chunk, model_run, digest=digest)
    # the mask folder is not part of the job's identity: the identical command rerun after the job completed (a new run
    # folder, score-<hash>-1) is the same job and skips its chunks; another job in --out is refused before any run folder
    job = check_scoring_job(cfg, items, scorer("", recorded_in(cfg.out)), digest)
    with Run.start("medical", cfg, name, command="score", kind="job", stable_name=True) as run:
        out = Path(cfg.out or run.dir / "scores")
        summary = run_job_from_config(items, scorer(str(run.path("masks")), recorded_in(out)), cfg, default_out=out, digest=digest, job=job)
        df, bad = read_output(out), read_quarantine(out)
        flagged = df[df["ood_flag"]] if len(df) and "ood_flag" in df.columns else df.iloc[0:0]
        if len(df):
            atomic_write_text(run.path("volumes.csv"), df.drop(columns=[c for c in df.columns if c in ("shape", "spacing_mm")]).to_csv(index=False))
            print(df[["case"] + [c for c in df.columns if c.startswith("ml_")] + ["ood_flag"]].to_string(index=False))
        for _, r in flagged.iterrows():
            log.warning(f"{r['case']}: out of distribution — {r['ood_reason']}")
            print(f"WARNING {r['case']}: out of distribution — {r['ood_reason']}", file=sys.stderr)
        for _, r in bad.iterrows():
            print(f"skipped {r['item_id']}: {r['reason']}", file=sys.stderr)
        run.finish({"scored": int(len(df)), "quarantined": int(len(bad)), "ood_flagged": int(len(flagged)), "summary": summary.line()})
    return run.dir


def main(argv: list[str] | None = None) -> int:
    return run_cli(ScoreConfig, score, argv, doc=__doc__, prog="python -m domains.medical.score")


if __name__ == "__main__":
    sys.exit(main())
