"""Segmentation metrics and the held-out evaluation: per-class Dice and HD95 (mm) on each test
volume's *native* grid (the mask is resampled back to the input geometry first).

For the brain task the test labels are the AAL atlas carried onto MNI152 by nearest-neighbour
resampling — an approximation of a tracing (see the dataset card).

The evaluation record (``evaluation.json``, ``test_evaluation.json``) is strict JSON: a metric that is
undefined is ``null``, and the record's ``undefined`` entry — the same shape as the record, holding only
the places that are ``null`` — says why, once. A case's Dice of a class absent from both mask and label::

    {"case": "a", "dice": {"x": null, ...}, "hd95_mm": {"x": null, ...},
     "undefined": {"dice": {"x": "class absent from both mask and label"}, "hd95_mm": {"x": "..."}}}

HD95 of a class in only one of the two is undefined too (infinite: the label's class was missed, or
the mask has a class the label lacks). Over cases, Dice and HD95 are means of the cases where they are
defined; a class absent from every case is ``null``, and so is the HD95 of a class infinite in any case
(its reason names the cases); ``mean_dice`` is the mean over the classes that have a Dice.
:func:`dice_per_class` and :func:`hd95_per_class` themselves return floats (NaN / inf) for arrays.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

from core.io import atomic_write_json
from core.progress import progress
from domains.medical.io import Volume, header_geometry, load_volume
from domains.medical.validation import MedicalInputError, check_geometry_match, check_label_array

__all__ = ["dice_per_class", "hd95_per_class", "evaluate_segmenter", "evaluate_volumes", "labelled_cases", "evaluate_heldout", "print_evaluation",
           "check_labelled_geometry"]


def dice_per_class(mask: np.ndarray, label: np.ndarray, class_names: list[str]) -> dict[str, float]:
    """Dice per foreground class; NaN when a class is absent from both."""
    out = {}
    for i, name in enumerate(class_names):
        if i == 0:
            continue
        p, t = mask == i, label == i
        denom = int(p.sum()) + int(t.sum())
        out[name] = float(2.0 * np.logical_and(p, t).sum() / denom) if denom else float("nan")
    return out


def hd95_per_class(mask: np.ndarray, label: np.ndarray, class_names: list[str], spacing, show_progress: bool = False,
                   desc: str = "HD95") -> dict[str, float]:
    """95th-percentile Hausdorff distance in mm per foreground class, defined as MONAI's
    ``compute_hausdorff_distance(percentile=95)`` (max of the two directed 95th percentiles of
    surface-to-surface distances), but computed inside each class's bounding box — much faster on a
    full-resolution volume, since distances are only computed near the structure. NaN when the class is absent from either mask, inf when
    it is present in only one. ``show_progress``: a bar over the classes (two distance transforms each: seconds per class on a
    1 mm volume — ~10 of evaluate's 12 s on the bundled brain, 20+ s under load)."""
    from scipy import ndimage

    sp = np.asarray([float(s) for s in spacing])
    out = {}
    for i in progress(range(1, len(class_names)), desc=desc, unit="class", leave=False, disable=not show_progress):
        name = class_names[i]
        p, t = mask == i, label == i
        if not p.any() and not t.any():
            out[name] = float("nan")
            continue
        if not p.any() or not t.any():
            out[name] = float("inf")
            continue
        idx = np.argwhere(p | t)
        lo, hi = np.maximum(idx.min(0) - 2, 0), idx.max(0) + 3
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        pb, tb = np.pad(p[box], 1), np.pad(t[box], 1)
        ps, ts = pb & ~ndimage.binary_erosion(pb), tb & ~ndimage.binary_erosion(tb)
        d_to_t = ndimage.distance_transform_edt(~ts, sampling=sp)
        d_to_p = ndimage.distance_transform_edt(~ps, sampling=sp)
        out[name] = float(max(np.percentile(d_to_t[ps], 95), np.percentile(d_to_p[ts], 95)))
    return out


def check_labelled_geometry(cases: list[dict]) -> None:
    """Each labelled case's label on its image's grid (shape and affine), from the NIfTI headers alone — before a
    model is loaded or a run folder made: a label of another grid was refused only when its case was read, after
    the imports, the model and the run's start (~1 min on a loaded machine), leaving a failed run. Other formats
    are checked when read (:func:`labelled_cases`)."""
    for c in cases:
        if not c.get("label"):
            continue
        image, label = header_geometry(c["image"]), header_geometry(c["label"])
        if image is not None and label is not None:
            check_geometry_match(image[0], image[1], label[0], label[1], c["image"], c["label"])


def labelled_cases(cases: list[dict], num_classes: int) -> Iterator[tuple[str, Volume, np.ndarray]]:
    """(id, image volume, label array) of each case that has a label, checked for geometry and values."""
    for c in cases:
        if not c.get("label"):
            continue
        vol = load_volume(c["image"])
        lab_vol = load_volume(c["label"], dtype=None)
        check_geometry_match(vol.shape, vol.affine, lab_vol.shape, lab_vol.affine, c["image"], c["label"])
        yield vol.id, vol, check_label_array(lab_vol.data, c["label"], num_classes)


ABSENT_FROM_BOTH = "class absent from both mask and label"
MISSED = "class in the label but not in the mask: the distance is infinite"
NOT_IN_LABEL = "class in the mask but not in the label: the distance is infinite"


def _case_row(case_id: str, mask: np.ndarray, label: np.ndarray, class_names: list[str], spacing, hd95: bool, show_progress: bool = False) -> dict:
    """One case's record: Dice (and HD95) per class, ``None`` where undefined, with the reason in ``undefined``."""
    metrics = {"dice": dice_per_class(mask, label, class_names)}
    if hd95:
        metrics["hd95_mm"] = hd95_per_class(mask, label, class_names, spacing, show_progress=show_progress, desc=f"HD95 {case_id}")
    row: dict = {"case": case_id}
    undefined: dict = {}
    for metric, values in metrics.items():
        row[metric] = {}
        for i, name in enumerate(class_names[1:], start=1):
            v = values[name]
            if np.isfinite(v):
                row[metric][name] = v
                continue
            row[metric][name] = None
            in_mask, in_label = bool((mask == i).any()), bool((label == i).any())
            why = ABSENT_FROM_BOTH if not (in_mask or in_label) else MISSED if in_label else NOT_IN_LABEL
            undefined.setdefault(metric, {})[name] = why
    row["undefined"] = undefined
    return row


def _mean_over_cases(rows: list[dict], metric: str, names: list[str], undefined: dict) -> dict[str, float | None]:
    """Per class, the mean of ``metric`` over the cases where it is defined. ``None`` (reason in ``undefined``)
    when the class is absent from every case, or — HD95 — infinite in any case (a mean would hide the miss)."""
    out: dict[str, float | None] = {}
    for n in names:
        vals = [r[metric][n] for r in rows if r[metric][n] is not None]
        infinite = [f"{r['case']}: {r['undefined'][metric][n]}" for r in rows if r["undefined"].get(metric, {}).get(n, ABSENT_FROM_BOTH) != ABSENT_FROM_BOTH]
        if metric == "hd95_mm" and infinite:
            out[n] = None
            undefined.setdefault(metric, {})[n] = "infinite in " + "; ".join(infinite)
        elif not vals:
            out[n] = None
            undefined.setdefault(metric, {})[n] = f"{ABSENT_FROM_BOTH} in every case"
        else:
            out[n] = float(np.mean(vals))
    return out


def evaluate_volumes(seg, cases: Iterable[tuple[str, Volume, np.ndarray]], hd95: bool = True) -> dict:
    """Per-case and mean metrics of a :class:`~domains.medical.predict.Segmenter` on (id, volume, label)
    cases, as strict-JSON values: ``None`` where undefined, the reason in ``undefined`` (module docstring)."""
    show = bool(getattr(seg, "show_progress", False))  # the commands' segmenter shows its bars: HD95's too
    rows = [_case_row(case_id, seg.predict_volume(vol), label, seg.class_names, vol.spacing, hd95, show) for case_id, vol, label in cases]
    if not rows:
        raise MedicalInputError("no labelled test case to evaluate on")
    names = seg.class_names[1:]
    undefined: dict = {}
    mean_dice = _mean_over_cases(rows, "dice", names, undefined)
    defined = [v for v in mean_dice.values() if v is not None]
    out = {"cases": rows, "dice": mean_dice, "mean_dice": float(np.mean(defined)) if defined else None}
    if not defined:
        undefined["mean_dice"] = "no class has a Dice: each is absent from both mask and label in every case"
    if hd95:
        out["hd95_mm"] = _mean_over_cases(rows, "hd95_mm", names, undefined)
    out["undefined"] = undefined
    return out


def evaluate_segmenter(seg, cases: list[dict], hd95: bool = True) -> dict:
    """Per-case and mean metrics of a :class:`~domains.medical.predict.Segmenter` on labelled cases (files)."""
    return evaluate_volumes(seg, labelled_cases(cases, len(seg.class_names)), hd95)


def evaluate_heldout(seg, test_cases: list[dict], run, label: str = "") -> dict:
    """The end-of-training evaluation of ``seg`` on the task's labelled test cases: writes
    ``test_evaluation.json`` into ``run``, prints one line, and returns the run-summary metrics
    (``test_mean_dice``, ``test_dice/<class>``, ``test_hd95/<class>``); ``{}`` without labelled cases."""
    if not any(c.get("label") for c in test_cases):
        return {}
    ev = evaluate_segmenter(seg, test_cases)
    atomic_write_json(run.path("test_evaluation.json"), ev, strict=True)
    print(f"{label + ' ' if label else ''}held-out {', '.join(r['case'] for r in ev['cases'])}: mean foreground Dice {_fmt(ev['mean_dice'], '.3f')} "
          + " ".join(f"{k}={_fmt(v, '.3f')}" for k, v in ev["dice"].items()))
    return {"test_mean_dice": ev["mean_dice"], **{f"test_dice/{k}": v for k, v in ev["dice"].items()},
            **{f"test_hd95/{k}": v for k, v in ev["hd95_mm"].items()}}


def _fmt(v: float | None, spec: str) -> str:
    """``v`` formatted by ``spec``; ``n/a`` (as wide) for an undefined value."""
    return format(v, spec) if v is not None else format("n/a", ">" + spec.split(".")[0])


def print_evaluation(res: dict, class_names: list[str]) -> None:
    """The evaluation table (per class Dice and HD95, mean foreground Dice) on stdout; an undefined
    value is ``n/a``, its reason listed below the table."""
    print(f"{'class':24s} {'Dice':>7s} {'HD95 mm':>8s}")
    for n in class_names[1:]:
        print(f"{n:24s} {_fmt(res['dice'][n], '7.3f')} {_fmt(res['hd95_mm'][n], '8.2f')}")
    print(f"{'mean foreground':24s} {_fmt(res['mean_dice'], '7.3f')}")
    undefined = res.get("undefined", {})
    for metric in ("dice", "hd95_mm"):
        for n, why in undefined.get(metric, {}).items():
            print(f"n/a {metric} {n}: {why}")
    if "mean_dice" in undefined:
        print(f"n/a mean_dice: {undefined['mean_dice']}")
