"""What the dashboards call (the dashboard contract); no training logic here.

    cases = list_cases()                         # [{"id", "image", "label", "dataset", "split"}]
    seg = load_segmenter(latest_run_dir("medical"))
    res = seg.predict(cases[0]["image"])         # SegmentationResult: .image .mask .class_names .volumes_ml
    dice_per_class(res.mask, load_label(cases[0]["label"]), res.class_names)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from domains.medical.evaluate import dice_per_class
from domains.medical.infer import SegmentationResult, Segmenter
from domains.medical.infer import volumes_ml as volumes_ml  # re-exported: the dashboards' per-structure volumes of a label
from domains.medical.validation import MedicalInputError

__all__ = ["list_cases", "load_segmenter", "dice_per_class", "load_label", "Segmenter", "SegmentationResult"]


def list_cases() -> list[dict]:
    """Every prepared case of the offline tasks (tasks whose source is not installed are skipped)."""
    from core.data import dataset_dir
    from domains.medical.data import DATASETS, read_msd_task

    out = []
    for spec in DATASETS:
        try:
            task = read_msd_task(dataset_dir(spec.name))
        except FileNotFoundError:  # not prepared here
            continue
        for c in task.cases():
            out.append({"id": c["id"], "image": c["image"], "label": c.get("label"), "dataset": spec.name, "split": c["split"]})
    return out


def load_segmenter(run_dir: str | Path) -> Segmenter:
    return Segmenter.from_run(run_dir)


def load_label(path: str | Path) -> np.ndarray:
    """A label volume in canonical (RAS) orientation — the same orientation as ``SegmentationResult.mask``."""
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
