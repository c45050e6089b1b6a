"""What nnU-Net and MONAI users expect around the network at inference, as plain library functions
(``Segmenter`` switches them with ``lcc=`` / ``tta=``; the robustness bench calls them directly):

* :func:`keep_largest_components` — per class, keep only the largest connected component (MONAI
  ``KeepLargestConnectedComponent``), for the classes that are one connected structure
  (:data:`SINGLE_STRUCTURES`: each cerebral hemisphere, the cerebellum). The deep grey nuclei are
  left and right nuclei — several components by definition — and are never reduced.
* :func:`mirror_tta_logits` — test-time augmentation by left–right mirroring: the network also sees
  the mirrored volume; its prediction is mirrored back with the lateral labels swapped
  (:func:`lateral_permutation` pairs ``*_left``/``*_right``, ``*_l``/``*_r``, ``left_*``/``right_*``
  from the class names) and the two softmax outputs are averaged.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

__all__ = ["SINGLE_STRUCTURES", "lcc_classes", "keep_largest_components", "lateral_permutation", "mirror_tta_logits", "LR_AXIS"]

# classes that are one connected structure in an image (by name); everything else is left alone
SINGLE_STRUCTURES = frozenset({"cerebrum_left", "cerebrum_right", "cerebellum", "brain", "spleen", "liver"})
LR_AXIS = 0  # after Orientation("RAS") the first spatial axis runs right -> left


def lcc_classes(class_names: Sequence[str]) -> list[int]:
    """Label ids :func:`keep_largest_components` reduces for these classes."""
    return [i for i, n in enumerate(class_names) if i > 0 and n.lower() in SINGLE_STRUCTURES]


def keep_largest_components(mask: np.ndarray, class_names: Sequence[str], classes: Sequence[int] | None = None) -> np.ndarray:
    """``mask`` (integer labels) with every class in ``classes`` (default :func:`lcc_classes`) reduced to
    its largest connected component (26-connectivity); removed voxels become background."""
    from monai.transforms import KeepLargestConnectedComponent

    labels = list(lcc_classes(class_names) if classes is None else classes)
    present = [c for c in labels if np.any(mask == c)]
    if not present:
        return mask
    keep = KeepLargestConnectedComponent(applied_labels=present, is_onehot=False, independent=True, connectivity=3)
    out = keep(torch.as_tensor(np.asarray(mask))[None])[0]
    return np.asarray(out.cpu().numpy() if isinstance(out, torch.Tensor) else out).astype(mask.dtype)


def lateral_permutation(class_names: Sequence[str]) -> list[int] | None:
    """``perm`` with ``perm[i]`` = the class that ``i`` becomes in a left–right mirrored image (its
    lateral partner, or itself); None when no class is lateral (then mirroring needs no relabelling)."""
    names = [n.lower() for n in class_names]
    pairs = (("_left", "_right"), ("_l", "_r"), ("left_", "right_"))
    perm = list(range(len(names)))
    found = False
    for i, n in enumerate(names):
        for a, b in pairs:
            for x, y in ((a, b), (b, a)):
                if (x.startswith("_") and n.endswith(x)) or (x.endswith("_") and n.startswith(x)):
                    partner = n[: -len(x)] + y if x.startswith("_") else y + n[len(x):]
                    if partner in names:
                        perm[i] = names.index(partner)
                        found = True
    return perm if found else None


def mirror_tta_logits(predict: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, class_names: Sequence[str],
                      axis: int = LR_AXIS) -> torch.Tensor:
    """``predict`` ((1, 1, X, Y, Z) → (1, C, X, Y, Z) logits) averaged over the image and its mirror
    along spatial ``axis``: returns log of the mean softmax (so a later softmax gives the mean
    probabilities), with the mirrored prediction's lateral channels swapped back."""
    dim = 2 + axis
    p = torch.softmax(predict(image).float(), 1)
    q = torch.softmax(predict(torch.flip(image, (dim,))).float(), 1).flip(dim)
    perm = lateral_permutation(class_names)
    if perm is not None:
        q = q[:, perm]  # q's channel "left" holds what the mirrored image called right
    return torch.log(((p + q) / 2).clamp_min(1e-12))
