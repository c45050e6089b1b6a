"""Export a trained run as a MONAI bundle: ``python -m domains.medical.bundle``.

The bundle (``configs/metadata.json``, ``configs/inference.json``, ``models/model.pt``, ``docs/``; see
``domains.medical.export``) is written into this job's own run folder, ``<run>/bundle`` — never into the
model run. With ``--check`` (default) it is run back through ``monai.bundle`` on the task's held-out volume.
Only the 3D networks (UNet/SegResNet) are exported; the 2.5D variant is refused with a clear message.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from core.cli import run_cli
from core.runs import Run, resolve_model_run
from domains.medical.config import BundleConfig
from domains.medical.data import read_msd_task, read_task_meta, task_dir

__all__ = ["export_and_check", "main"]


def export_and_check(cfg: BundleConfig) -> Path:
    """Export the model run as a MONAI bundle into this job's run folder; with ``check``, run it back."""
    from domains.medical.export import check_exportable, export_bundle, run_bundle

    model_run = resolve_model_run("medical", cfg.model_run, cfg.runs_dir)
    meta = read_task_meta(model_run)
    check_exportable(meta, model_run)  # before the run folder: a refusal leaves nothing behind
    with Run.start("medical", cfg, command="bundle", kind="job") as run:
        out = export_bundle(model_run, run.dir / "bundle")
        print(f"MONAI bundle: {out}")
        summary = {"model_run": str(model_run)}
        if cfg.check:
            task = read_msd_task(task_dir(meta["task"]))
            img = Path((task.test or task.training)[0]["image"])
            with tempfile.TemporaryDirectory() as tmp:
                (Path(tmp) / "in").mkdir()
                (Path(tmp) / "in" / img.name).symlink_to(img)
                masks = run_bundle(out, Path(tmp) / "in", Path(tmp) / "out")
                print(f"monai.bundle ran the bundle back on {img.name}: {[m.name for m in masks]}")
                summary["checked_masks"] = len(masks)
        run.finish(summary)
    return out


def main(argv: list[str] | None = None) -> int:
    return run_cli(BundleConfig, export_and_check, argv, doc=__doc__, prog="python -m domains.medical.bundle")


if __name__ == "__main__":
    sys.exit(main())
