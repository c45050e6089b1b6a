"""Evaluate a trained run on the held-out volume(s) of its task: ``python -m domains.medical.evaluate``.

Metrics are computed on each test volume's *native* grid (the mask is resampled back to the input
geometry first), per class: Dice and HD95 (mm) — ``domains.medical.metrics``. ``evaluation.json`` is
strict JSON: an undefined metric (a class absent from both mask and label, an infinite HD95) is
``null``, and its ``undefined`` entry says why (shape: ``domains.medical.metrics``). For the brain task the
test labels are the AAL atlas carried onto MNI152 by nearest-neighbour resampling — an approximation of
a tracing (see the card). ``--lcc`` / ``--tta`` evaluate with the inference switches ``infer`` uses.
Progress: one bar over the volumes (each read, segmented, then scored: HD95 takes most of the bundled 1 mm brain's 12 s) and
beneath it the sliding window's batches, the resampling back onto the input grid (slabs) and HD95 (classes); ``SUITE_PROGRESS=0``
hides them; the log says when the model (and torch/MONAI, 10-30 s on a busy CPU) is being loaded. A test case whose NIfTI
label is on another grid (shape or affine) than its image is refused from the headers before the model loads or a run
folder exists (the label is compared as it is, never resampled).
"""

from __future__ import annotations

import sys
from pathlib import Path

from core.cli import run_cli
from core.io import atomic_write_json
from core.logging import get_logger
from core.progress import progress
from core.runs import Run, resolve_model_run
from domains.medical.config import EvaluateConfig
from domains.medical.data import check_task_fits_model, read_msd_task, read_task_meta, task_dir
from domains.medical.validation import MedicalInputError

__all__ = ["evaluate", "main"]

log = get_logger("medical.evaluate")


def evaluate(cfg: EvaluateConfig) -> Path:
    from domains.medical.metrics import check_labelled_geometry, evaluate_segmenter, evaluate_volumes, print_evaluation

    model_run = resolve_model_run("medical", cfg.model_run, cfg.runs_dir)
    meta = read_task_meta(model_run)
    task = read_msd_task(task_dir(cfg.task or meta["task"]))
    check_task_fits_model(task, meta)
    if cfg.split != "val":  # before the model and the run folder: MSD tasks list their test images without labels
        cases = task.test if cfg.split == "test" else task.training
        if not any(c.get("label") for c in cases):
            raise MedicalInputError(f"--split {cfg.split}: none of the {len(cases)} {cfg.split} case(s) of {task.root} has a label to compare with "
                                    f"(dataset.json lists no 'label' and there is no labelsTs/<same name>); add the labels, or evaluate "
                                    f"--split val (the validation case training selects on)")
        check_labelled_geometry(cases)  # a label on another grid than its image: from the headers, before the model and the run
    log.info("loading the model (importing torch and MONAI: 10-30 s on a busy CPU)")
    from domains.medical.predict import Segmenter
    from domains.medical.training import validation_case

    seg = Segmenter.from_run(model_run, device=cfg.device, lcc=cfg.lcc, tta=cfg.tta, crop=cfg.crop, show_progress=True)
    with Run.start("medical", cfg, command="evaluate", kind="job") as run:
        if cfg.split == "val":
            res = evaluate_volumes(seg, [validation_case(task)])
        else:  # one bar over the volumes (each read, segmented and scored in turn), the sliding-window bar beneath it
            labelled = [c for c in (task.test if cfg.split == "test" else task.training) if c.get("label")]
            res = evaluate_segmenter(seg, progress(labelled, desc=f"evaluating ({cfg.split})", unit="volume"))
        res["model_run"] = str(model_run)
        atomic_write_json(run.path("evaluation.json"), res, strict=True)  # undefined metrics are null, the reason in "undefined"
        print_evaluation(res, seg.class_names)
        run.finish({"mean_dice": res["mean_dice"], **{f"dice/{k}": v for k, v in res["dice"].items()},
                    **{f"hd95/{k}": v for k, v in res["hd95_mm"].items()}})
    return run.dir


def main(argv: list[str] | None = None) -> int:
    return run_cli(EvaluateConfig, evaluate, argv, doc=__doc__, prog="python -m domains.medical.evaluate")


if __name__ == "__main__":
    sys.exit(main())
