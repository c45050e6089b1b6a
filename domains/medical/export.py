"""MONAI bundle export of a trained run (the library below ``python -m domains.medical.bundle``).

Layout (MONAI Model Zoo convention)::

    <bundle>/configs/metadata.json    inputs, outputs, labels, preprocessing, metrics, licence notes
    <bundle>/configs/inference.json   the whole inference pipeline as a MONAI config (LoadImaged →
                                      Orientationd → Spacingd → intensity → SlidingWindowInferer →
                                      Invertd → AsDiscreted → SaveImaged), run by SupervisedEvaluator
    <bundle>/models/model.pt          the network's state dict (tensors only; loads with weights_only)
    <bundle>/docs/README.md

Run it back with MONAI itself::

    python -m monai.bundle run --config_file <bundle>/configs/inference.json \\
        --bundle_root <bundle> --dataset_dir <folder of .nii.gz> --output_dir <out>

Only the 3D networks (UNet/SegResNet) are exported; the 2.5D EfficientNet variant is refused with a
clear message (its slice-stacking wrapper is not a MONAI network).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from core.checkpoint import load_weights
from core.io import atomic_path, atomic_write_json, atomic_write_text
from core.runs import read_run
from domains.medical.config import PipelineConfig
from domains.medical.model import UnknownModelError, network_def, spec_from_task_meta
from domains.medical.predict import model_from_run_meta, read_task_meta
from domains.medical.transforms import image_steps
from domains.medical.validation import MedicalInputError

__all__ = ["export_bundle", "run_bundle", "inference_config", "metadata", "check_exportable"]


def check_exportable(meta: dict, run_dir: str | Path) -> None:
    """A :class:`MedicalInputError` for a run whose model is not a plain MONAI network (the 2.5D variant)."""
    try:
        network_def(spec_from_task_meta(meta))
    except UnknownModelError as e:
        raise MedicalInputError(f"{run_dir}: {e}") from None


def inference_config(meta: dict, sw_batch_size: int = 4, overlap: float = 0.25) -> dict:
    """The bundle's ``configs/inference.json``; its preprocessing is :func:`image_steps`, the
    chain our own ``Segmenter`` runs, written as MONAI config entries."""
    pipe = meta["pipeline"]
    return {
        "imports": ["$import glob", "$import os"],
        "bundle_root": ".",
        "output_dir": "$@bundle_root + '/eval'",
        "dataset_dir": "$@bundle_root + '/sample'",
        "datalist": "$list(sorted(glob.glob(os.path.join(@dataset_dir, '*.nii*'))))",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": network_def(spec_from_task_meta(meta)),
        "network": "$@network_def.to(@device)",
        "preprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "LoadImaged", "keys": "image", "image_only": False},
            {"_target_": "EnsureChannelFirstd", "keys": "image"},
            *({"_target_": name, **kwargs} for name, kwargs in image_steps(PipelineConfig(**pipe))),
            {"_target_": "EnsureTyped", "keys": "image"},
        ]},
        "dataset": {"_target_": "Dataset", "data": "$[{'image': i} for i in @datalist]", "transform": "@preprocessing"},
        "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "shuffle": False, "num_workers": 0},
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [pipe["patch"]] * 3, "sw_batch_size": sw_batch_size, "overlap": overlap,
                    "mode": "gaussian"},
        "postprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "Activationsd", "keys": "pred", "softmax": True},
            {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing", "orig_keys": "image", "nearest_interp": False, "to_tensor": True},
            {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
            {"_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir", "output_postfix": "seg", "separate_folder": False,
             "resample": False, "output_dtype": "$numpy.uint8"},
        ]},
        "handlers": [
            {"_target_": "CheckpointLoader", "load_path": "$@bundle_root + '/models/model.pt'", "load_dict": {"model": "@network"},
             "map_location": "@device"},
            {"_target_": "StatsHandler", "iteration_log": False},
        ],
        "evaluator": {"_target_": "SupervisedEvaluator", "device": "@device", "val_data_loader": "@dataloader", "network": "@network",
                      "inferer": "@inferer", "postprocessing": "@postprocessing", "val_handlers": "@handlers", "amp": False},
        "initialize": ["$monai.utils.set_determinism(seed=0)"],
        "run": ["$@evaluator.run()"],
    }


def metadata(meta: dict, run_info: dict) -> dict:
    import monai

    pipe = meta["pipeline"]
    names = meta["class_names"]
    metrics = run_info.get("metrics", {})
    return {
        "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20220324.json",
        "version": "0.1.0",
        "changelog": {"0.1.0": f"exported from run {run_info.get('name')}"},
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": __import__("numpy").__version__,
        "optional_packages_version": {"nibabel": __import__("nibabel").__version__},
        "name": f"dlsuite {meta['task_name']} segmentation",
        "task": f"{pipe['modality']} segmentation of {', '.join(names[1:])}",
        "description": f"3D {meta['model']['name']} trained by domains.medical.train on task {meta['task']}.",
        "authors": "dlsuite medical domain",
        "copyright": "see the dataset cards for data licences",
        "data_source": meta["task"],
        "data_type": "nibabel",
        "image_classes": f"single channel {pipe['modality']} volume, resampled to {pipe['spacing']} mm isotropic, RAS",
        "label_classes": {str(i): n for i, n in enumerate(names)},
        "pred_classes": {str(i): n for i, n in enumerate(names)},
        "eval_metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and ("dice" in k or "hd95" in k)},
        "intended_use": "research and demonstration only; not for clinical use",
        "references": ["MONAI bundle specification: https://docs.monai.io/en/latest/mb_specification.html"],
        "network_data_format": {
            "inputs": {"image": {"type": "image", "format": "hounsfield" if pipe["modality"].upper() == "CT" else "magnitude",
                                 "modality": pipe["modality"], "num_channels": 1, "spatial_shape": [pipe["patch"]] * 3,
                                 "dtype": "float32", "value_range": [0, 1], "is_patch_data": True,
                                 "channel_def": {"0": "image"}}},
            "outputs": {"pred": {"type": "image", "format": "segmentation", "num_channels": len(names),
                                 "spatial_shape": [pipe["patch"]] * 3, "dtype": "float32", "value_range": [0, 1],
                                 "is_patch_data": True, "channel_def": {str(i): n for i, n in enumerate(names)}}},
        },
    }


def export_bundle(run_dir: str | Path, out_dir: str | Path) -> Path:
    """Write the bundle for a trained run; returns ``out_dir``."""

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    meta = read_task_meta(run_dir)
    cfg = json.loads((run_dir / "config.json").read_text())
    check_exportable(meta, run_dir)  # refuses non-exportable models before writing anything
    model = model_from_run_meta(meta)
    load_weights(run_dir / "best.safetensors", model)
    with atomic_path(out_dir / "models" / "model.pt") as tmp:
        torch.save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, tmp)
    atomic_write_json(out_dir / "configs" / "inference.json", inference_config(meta, cfg.get("sw_batch_size", 4), cfg.get("overlap", 0.25)))
    atomic_write_json(out_dir / "configs" / "metadata.json", metadata(meta, read_run(run_dir)), strict=True)  # an older run's inf HD95 is null
    atomic_write_text(out_dir / "docs" / "README.md", f"# {meta['task_name']} segmentation (MONAI bundle)\n\nExported from `{run_dir}` by "
                      "`python -m domains.medical.bundle`. Classes: " + ", ".join(f"{i} {n}" for i, n in enumerate(meta["class_names"]))
                      + ".\n\nRun: `python -m monai.bundle run --config_file configs/inference.json --bundle_root . --dataset_dir <folder> "
                      "--output_dir <out>`\n\nResearch use only.\n")
    return out_dir


def run_bundle(bundle_dir: str | Path, dataset_dir: str | Path, output_dir: str | Path) -> list[Path]:
    """Load the bundle with ``monai.bundle.ConfigWorkflow`` and run its inference; returns the masks."""
    from monai.bundle import ConfigWorkflow

    bundle_dir = Path(bundle_dir)
    wf = ConfigWorkflow(config_file=str(bundle_dir / "configs" / "inference.json"), meta_file=str(bundle_dir / "configs" / "metadata.json"),
                        workflow_type="infer", bundle_root=str(bundle_dir), dataset_dir=str(dataset_dir), output_dir=str(output_dir))
    wf.initialize()
    wf.run()
    wf.finalize()
    return sorted(Path(output_dir).glob("*_seg.nii*"))
