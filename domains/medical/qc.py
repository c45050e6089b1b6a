"""Out-of-distribution guard: flag a segmentation whose structure volumes are outside the adult
range or whose network is unsure — so a user never gets a 3.8 L "brain" silently.

All ranges live here (:data:`BRAIN_RANGES_ML`, :data:`MAX_HEMISPHERE_ASYMMETRY`,
:data:`MIN_MEAN_CONFIDENCE`). They are checked only for the classes a task has:

* total brain (all foreground classes of the brain task) 800–2000 mL;
* cerebellum 80–300 mL — the usual adult cerebellum is 100–170 mL, but this task's cerebellum class
  also holds the brainstem (AAL labels only grey matter; brainstem voxels are filled into the nearest
  region, see the dataset card): its reference labels measure 235 mL on Colin27 and 257 mL on MNI152;
* left and right cerebral hemispheres within 15 % of their mean;
* mean foreground confidence (mean of the top softmax probability over the voxels the network labels
  foreground, on its own grid) ≥ 0.80 — for every task.

``check(volumes_ml, mean_confidence)`` returns a :class:`QualityCheck`; its ``flagged`` and ``reason`` go
into ``infer``'s ``<id>_volumes.json``, each ``score`` row (columns ``ood_flag``, ``ood_reason``,
``mean_confidence``), the dashboard's ``SegmentationResult`` and a WARNING log line.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["BRAIN_RANGES_ML", "MAX_HEMISPHERE_ASYMMETRY", "MIN_MEAN_CONFIDENCE", "QualityCheck", "check", "BRAIN_CLASSES_FOR_TOTAL"]

BRAIN_RANGES_ML: dict[str, tuple[float, float]] = {
    "total": (800.0, 2000.0),
    "cerebellum": (80.0, 300.0),
}
BRAIN_CLASSES_FOR_TOTAL = ("cerebrum_left", "cerebrum_right", "cerebellum", "deep_grey_nuclei")
MAX_HEMISPHERE_ASYMMETRY = 0.15  # |L - R| / mean(L, R)
MIN_MEAN_CONFIDENCE = 0.80


@dataclass
class QualityCheck:
    """The guard's verdict: ``flagged`` (out of distribution), the ``reasons`` and the mean confidence."""

    flagged: bool
    reasons: list[str] = field(default_factory=list)
    mean_confidence: float | None = None

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)

    def as_row(self) -> dict:
        """The output-table columns: ``ood_flag``, ``ood_reason``, ``mean_confidence``."""
        return {"ood_flag": bool(self.flagged), "ood_reason": self.reason,
                "mean_confidence": None if self.mean_confidence is None else round(float(self.mean_confidence), 4)}


def check(volumes_ml: dict[str, float], mean_confidence: float | None = None) -> QualityCheck:
    """Compare a result's per-structure volumes (mL) and mean foreground confidence with the ranges above."""
    reasons = []
    v = {k.lower(): float(x) for k, x in volumes_ml.items()}
    if all(c in v for c in BRAIN_CLASSES_FOR_TOTAL):
        total = sum(v[c] for c in BRAIN_CLASSES_FOR_TOTAL)
        lo, hi = BRAIN_RANGES_ML["total"]
        if not lo <= total <= hi:
            reasons.append(f"total brain volume {total:.0f} mL outside the adult range {lo:.0f}-{hi:.0f} mL")
    if "cerebellum" in v and "cerebrum_left" in v:
        lo, hi = BRAIN_RANGES_ML["cerebellum"]
        if not lo <= v["cerebellum"] <= hi:
            reasons.append(f"cerebellum {v['cerebellum']:.0f} mL outside the adult range {lo:.0f}-{hi:.0f} mL")
    if "cerebrum_left" in v and "cerebrum_right" in v:
        left, right = v["cerebrum_left"], v["cerebrum_right"]
        mean = (left + right) / 2
        asym = abs(left - right) / mean if mean > 0 else float("inf")
        if asym > MAX_HEMISPHERE_ASYMMETRY:
            reasons.append(f"hemispheres differ by {100 * asym:.0f} % (left {left:.0f} mL, right {right:.0f} mL; "
                           f"more than {100 * MAX_HEMISPHERE_ASYMMETRY:.0f} %)")
    if mean_confidence is not None and mean_confidence < MIN_MEAN_CONFIDENCE:
        reasons.append(f"mean foreground confidence {mean_confidence:.2f} below {MIN_MEAN_CONFIDENCE:.2f}")
    return QualityCheck(flagged=bool(reasons), reasons=reasons, mean_confidence=mean_confidence)
