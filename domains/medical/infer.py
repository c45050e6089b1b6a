"""Segment one volume: ``python -m domains.medical.infer --input scan.nii.gz``.

Writes, into this job's own run directory: ``<id>_mask.nii.gz`` on exactly the input's voxel grid
(same affine, same shape; qform/sform copied for NIfTI inputs; an Analyze 7.5 input, which stores no orientation, gets
``<id>_mask.hdr`` + ``.img`` with its own header, so any viewer places mask and image alike), ``<id>_volumes.json`` (mL per
structure, and the out-of-distribution check: ``ood_flag``, ``ood_reason``, ``mean_confidence``) and
``<id>_overlay.png`` (three orthogonal slices with the mask over the image). ``<id>`` is the file name,
or ``series-<hash>`` for a DICOM series folder. Input: NIfTI (a NIfTI-pair ``.hdr`` too), Analyze 7.5 (``.hdr`` +
``.img``: its left/right is assumed, and a warning says so), NRRD or a DICOM series folder; default:
the held-out MNI152 volume with the newest trained model (``--model-run`` picks another).

Inputs are checked from their header (size, spacing, the size of the resampled grid), then read and
checked (dimensionality, NaN/inf, damaged files, a blank image, a DICOM series whose Modality is not the
model's), before the model is loaded or a run folder is made:
a refused input leaves nothing behind. Engine:
``domains.medical.predict.Segmenter``; ``--lcc`` / ``--tta``: ``domains.medical.postprocess``. Progress bars count
the sliding window's batches (the mirrored pass's too with ``--tta``) and the slabs resampled back onto the input grid
(seconds on a large CT); ``SUITE_PROGRESS=0`` hides them; the log says when the model (torch/MONAI imports) is loading.

Inputs a user must choose within: a DICOM folder holding several series (a localizer beside the axial series) is
refused with the list of its series (``series-<hash>``, slice count, size, SeriesNumber — no patient field);
``--series`` picks one. A 4D NIfTI or NRRD (time points, an MSD image's channels, a DWI's gradients), or a DICOM series of several
images at each slice position (multi-echo, dynamic), is refused naming how many volumes it holds;
``--volume N`` picks one volume. A DICOM series missing slices is refused naming the gap (InstanceNumbers around it),
and one compressed in a transfer syntax no installed decoder reads names the syntax and the pip packages that read it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from core.cli import run_cli
from core.logging import get_logger
from core.runs import Run, resolve_model_run
from domains.medical.config import InferConfig
from domains.medical.data import read_msd_task, read_task_meta, task_dir
from domains.medical.io import read_input_for_model
from domains.medical.validation import MedicalInputError

__all__ = ["infer", "main"]

log = get_logger("medical.infer")


def infer(cfg: InferConfig) -> Path:
    model_run = resolve_model_run("medical", cfg.model_run, cfg.runs_dir)
    meta = read_task_meta(model_run)
    if cfg.input is None:
        task = read_msd_task(task_dir(meta["task"]))
        src = (task.test or task.training)[0]["image"]
    elif not str(cfg.input).strip():
        raise MedicalInputError("--input is empty; give a NIfTI/NRRD file or a DICOM series folder")
    else:
        src = cfg.input
    # refusals are fast: the header, then what only the voxels show (4D, NaN, a truncated file, a blank image, another
    # modality) — before the model, the heavy imports and the run folder
    vol = read_input_for_model(src, meta, series=cfg.series, volume=cfg.volume)
    log.info("loading the model (importing torch and MONAI: 10-30 s on a busy CPU)")
    from domains.medical.predict import Segmenter, save_result

    seg = Segmenter.from_run(model_run, device=cfg.device, lcc=cfg.lcc, tta=cfg.tta, crop=cfg.crop, show_progress=True)
    with Run.start("medical", cfg, command="infer", kind="job") as run:
        res = seg.predict(vol)
        rec = save_result(res, run.dir, model_run)
        for name, ml in res.volumes_ml.items():
            print(f"{name:24s} {ml:10.1f} mL")
        if res.ood_flag:
            log.warning(f"{rec['input']}: out of distribution — {res.ood_reason}")
            print(f"WARNING: out of distribution — {res.ood_reason}", file=sys.stderr)
        run.finish({**{f"volume_ml/{k}": v for k, v in res.volumes_ml.items()}, "ood_flag": res.ood_flag, "mean_confidence": res.mean_confidence})
    return run.dir


def main(argv: list[str] | None = None) -> int:
    return run_cli(InferConfig, infer, argv, doc=__doc__, prog="python -m domains.medical.infer")


if __name__ == "__main__":
    sys.exit(main())
