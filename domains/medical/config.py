"""Every medical config in one place: the parts (model, data pipeline, optimisation, sliding window,
post-processing) and one config per command, each holding only the fields that command uses.

Part mixins carry flags (their fields become ``--flags`` through ``core.config``); a command config
combines parts with the core mixins it needs. :class:`PipelineConfig` is the data pipeline a trained
run stores in ``task.json`` (modality and class count come from the task, not from flags).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from core.config import RESUME_SAME_DATA, ConfigError, DeviceConfig, ModelRunConfig, ResumeConfig, RunConfig, SeedConfig, TrackingConfig
from core.scoring import ScoringConfig
from domains.medical.data import BRAIN_TASK, CT_TASK
from domains.medical.model import MODEL_NAMES, UNET_CHANNELS

__all__ = ["PipelineConfig", "ModelFields", "DataFields", "OptimFields", "WindowFields", "PostFields", "ComputeFields",
           "TrainConfig", "SliceConfig", "EvaluateConfig", "InferConfig", "ScoreConfig", "BundleConfig"]


@dataclass
class PipelineConfig:
    """The data pipeline of a trained run (stored as ``task.json["pipeline"]``): what preprocessing,
    patch sampling and the sliding window need."""

    modality: str = "MRI"  # "CT" | "MRI"
    num_classes: int = 5
    spacing: float = 3.0
    patch: int = 48
    num_samples: int = 4
    ct_level: float = 400.0
    ct_width: float = 1800.0
    allow_flip: bool = False
    crop_margin: int = 4

    def to_dict(self) -> dict:
        return asdict(self)


# --- parts ---------------------------------------------------------------------------------------


@dataclass
class ModelFields:
    model: str = field(default="unet", metadata={"help": "3D network", "choices": list(MODEL_NAMES)})
    channels: tuple[int, ...] = field(default=UNET_CHANNELS, metadata={"min": 1, "help": "feature channels per level (UNet); first one for SegResNet"})

    def __post_init__(self) -> None:
        check_unet_levels(self.channels, getattr(self, "model", "unet"))


def check_unet_levels(channels, model: str = "unet") -> None:
    """A UNet needs two levels or more: ``--channels 16`` failed inside MONAI ('the length of `channels` should be no
    less than 2') with a traceback, after the task was loaded and a run folder made."""
    if model == "unet" and len(tuple(channels)) < 2:
        raise ConfigError(f"--channels {' '.join(str(c) for c in channels) or '(none)'}: the UNet needs 2 or more levels, one channel "
                          f"count each (e.g. --channels {' '.join(str(c) for c in UNET_CHANNELS)})")


@dataclass
class DataFields:
    task: str = field(default=BRAIN_TASK, metadata={"help": "prepared task name (msd-brain-aal, msd-headct-bone) or an MSD folder with dataset.json",
                                                    # train --resume: another task's validation case (its last training case) or test cases
                                                    # could be ones the checkpoint trained on (core.config.ResumeConfig); an MSD folder is
                                                    # compared by content (the same folder moved or copied continues), a prepared task by name
                                                    "resume": RESUME_SAME_DATA, "data_names": (BRAIN_TASK, CT_TASK),
                                                    "resume_why": "it decides the validation case (the task's last training case) "
                                                    "and the test cases; the checkpoint has trained on the run's other training cases, which another "
                                                    "task could validate or test on (leakage)"})
    spacing: float = field(default=3.0, metadata={"above": 0, "help": "isotropic resampling spacing in mm"})
    patch: int = field(default=48, metadata={"min": 1, "help": "cubic patch side in voxels (training and sliding window)"})
    num_samples: int = field(default=4, metadata={"min": 1, "help": "patches drawn per volume per step (the batch size)"})
    ct_level: float = field(default=400.0, metadata={"help": "CT window level (HU)"})
    ct_width: float = field(default=1800.0, metadata={"above": 0, "help": "CT window width (HU)"})


@dataclass
class OptimFields:
    iters_per_epoch: int = field(default=20, metadata={"min": 1, "help": "optimizer steps per epoch"})
    max_epochs: int = field(default=60, metadata={"min": 1, "help": "upper bound on epochs (60 x 20 = 1200 steps: the robust augmentation on the "
                                                          "skull-stripped and the with-skull head needs four times the standard recipe's 300; "
                                                          "~5 min on 2 idle cores with bf16, README 'Robustness')"})
    val_every: int = field(default=5, metadata={"min": 1, "help": "validate every N epochs"})
    patience: int = field(default=8, metadata={"min": 0, "help": "early stopping: validations without improvement"})
    lr: float = field(default=3e-3, metadata={"above": 0, "help": "peak learning rate (AdamW, cosine decay)"})
    weight_decay: float = field(default=1e-5, metadata={"min": 0, "help": "AdamW weight decay"})


@dataclass
class WindowFields:
    sw_batch_size: int = field(default=4, metadata={"min": 1, "help": "sliding-window batch"})
    overlap: float = field(default=0.25, metadata={"min": 0, "below": 1, "help": "sliding-window overlap"})


@dataclass
class ComputeFields:
    amp: bool = field(default=True, metadata={"help": "mixed precision: fp16/bf16 on GPU, bf16 on CPUs with AMX bf16 units; fp32 on other CPUs"})
    threads: int = field(default=0, metadata={"min": 0, "help": "torch CPU threads; 0 = auto (all cores, fewer when the machine is already busy — oversubscribed OpenMP threads are several times slower)"})


@dataclass
class PostFields:
    """Inference switches (see ``domains.medical.postprocess``)."""

    lcc: bool = field(default=True, metadata={"help": "keep the largest connected component of each class that is one structure (cerebral hemispheres, cerebellum; see postprocess.SINGLE_STRUCTURES)"})
    tta: bool = field(default=False, metadata={"help": "test-time augmentation: average with the left-right mirrored prediction (lateral labels swapped); ~2x the network time"})
    crop: bool = field(default=True, metadata={"help": "run the sliding window only over the box of non-zero voxels (nnU-Net's crop): fewer windows, and "
                                                       "oblique scans' empty corners no longer shift the windows (--no-crop: the whole network grid)"})


# --- commands ------------------------------------------------------------------------------------


@dataclass
class TrainConfig(ModelFields, DataFields, OptimFields, WindowFields, ComputeFields, TrackingConfig, ResumeConfig, SeedConfig, DeviceConfig, RunConfig):
    """``python -m domains.medical.train``."""

    evaluate_test: bool = field(default=True, metadata={"help": "evaluate the best model on the held-out test volume(s) at the end"})
    augment: str = field(default="robust", metadata={
        "help": "robust: the real image with rotations up to 20 degrees about every axis, a random T2-type contrast inversion, random "
                "intensity curves, gamma, bias field and noise (transforms.train_augment; README, 'Robustness'); "
                "standard: the real image with a mild affine and intensity augmentation; synth: domain randomisation from the task's "
                "whole-head label map (domains.medical.synth; tasks without one use standard) — from scratch it needs more steps than "
                "the default budget, so fine-tune a standard run with it: --augment synth --init-from <run> --lr 1e-3 --max-epochs 8 "
                "(README, 'Robustness')",
        "choices": ["robust", "synth", "standard"]})
    with_skull: bool = field(default=True, metadata={
        "help": "also train on the task's head image WITH its skull (msd-brain-aal: Colin27 ch2, same labels; non-brain tissue is "
                "background) and select on its deformed copy too, so scans that are not skull-stripped are segmented; tasks "
                "without such an image train on their own images (--augment synth has its own heads)"})
    init_from: str | None = field(default=None, metadata={
        "help": "a trained medical model run (folder or name) whose best weights initialise the network — fine-tuning, e.g. a "
                "--augment standard run trained further with --augment synth"})


@dataclass
class SliceConfig(ComputeFields, TrackingConfig, SeedConfig, DeviceConfig, RunConfig):
    """``python -m domains.medical.slices``: the 2.5D EfficientNet-Lite0 variant."""

    task: str = field(default=BRAIN_TASK, metadata={"help": "prepared task name or MSD folder"})
    mode: str = field(default="full", metadata={"help": "full fine-tuning or LoRA on the encoder", "choices": ["full", "lora"]})
    spacing: float = field(default=3.0, metadata={"above": 0, "help": "isotropic spacing (mm) of the slices"})
    context: int = field(default=1, metadata={"min": 0, "help": "neighbouring slices on each side (channels = 2*context+1; 1 → 3, the RGB stem)"})
    steps: int = field(default=600, metadata={"min": 1, "help": "optimizer steps"})
    batch: int = field(default=8, metadata={"min": 1, "help": "slices per step"})
    lr: float = field(default=2e-3, metadata={"above": 0, "help": "learning rate (AdamW, cosine)"})
    lora_r: int = field(default=8, metadata={"min": 1, "help": "LoRA rank"})
    pretrained: bool = field(default=True, metadata={"help": "ImageNet weights for the encoder (packaged, offline)"})


@dataclass
class EvaluateConfig(PostFields, ModelRunConfig, TrackingConfig, DeviceConfig, RunConfig):
    """``python -m domains.medical.evaluate``."""

    task: str | None = field(default=None, metadata={"help": "task name or MSD folder (default: the run's task); its test cases with labels are used"})
    split: str = field(default="test", metadata={"help": "which cases: test, train, or val (the validation case training selects on, "
                                                          "at 1 mm: choose inference settings such as --lcc/--tta here, not on test)",
                                                  "choices": ["test", "train", "val"]})


@dataclass
class InferConfig(PostFields, ModelRunConfig, TrackingConfig, DeviceConfig, RunConfig):
    """``python -m domains.medical.infer``."""

    input: str | None = field(default=None, metadata={"private": True, "help": "NIfTI/NRRD file, Analyze or NIfTI-pair .hdr (its .img beside it) or DICOM series folder (default: the held-out MNI152 test volume); "
                                                                          "not recorded in the run's config.json or MLflow (a path may carry a patient's name)"})
    series: str | None = field(default=None, metadata={"help": "for a DICOM folder holding several series (a localizer beside the axial series): "
                                                               "the one to segment, as series-<hash> or its SeriesNumber — a folder of several "
                                                               "series is refused with the list of them without it"})
    volume: int | None = field(default=None, metadata={"min": 0, "help": "for a 4D NIfTI or NRRD (time points, or an MSD image's channels such as "
                                                                          "FLAIR/T1w/t1gd/T2w) or a DICOM series of several images at each "
                                                                          "position (multi-echo, dynamic; in EchoNumbers/TemporalPositionIdentifier "
                                                                          "order): the 0-based index of the volume to segment — such an input "
                                                                          "is refused, naming how many volumes it holds, without it"})


@dataclass
class ScoreConfig(PostFields, ScoringConfig, ModelRunConfig, TrackingConfig, DeviceConfig, RunConfig):
    """``python -m domains.medical.score``."""

    input: str | None = field(default=None, metadata={"private": True, "help": "folder of volumes (default: the trained task's imagesTr + imagesTs); "
                                                                          "not recorded in the run's config.json or MLflow (a path may carry a patient's name)"})
    name_map: bool = field(default=False, metadata={"help": "opt in: write <input>/.dlsuite-ids.csv (id -> your entry name) beside the inputs; "
                                                            "outputs, logs and MLflow only ever carry the non-identifying ids"})
    series: str | None = field(default=None, metadata={"help": "for every DICOM folder of the input: the series to segment, as its "
                                                               "SeriesNumber (or a series-<hash>, which names one series of one folder), "
                                                               "as infer --series; a folder without that series is quarantined listing its "
                                                               "series. Without --series a folder of several series is quarantined "
                                                               "with that list"})
    volume: int | None = field(default=None, metadata={"min": 0, "help": "for every 4D NIfTI/NRRD and every DICOM series of several images "
                                                                          "at each position (multi-echo, dynamic) of the input: the 0-based "
                                                                          "volume to segment, as infer --volume; 3D files and series are read "
                                                                          "as they are. Without it such an input is quarantined naming how "
                                                                          "many volumes it holds"})


@dataclass
class BundleConfig(ModelRunConfig, RunConfig):
    """``python -m domains.medical.bundle``: the bundle goes into this job's own run folder."""

    check: bool = field(default=True, metadata={"help": "run the exported bundle back through monai.bundle on the task's held-out volume"})
