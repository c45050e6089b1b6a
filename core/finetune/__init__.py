"""Fine-tuning toolkit: transfer learning (:mod:`core.finetune.transfer`) and parameter-efficient
fine-tuning — LoRA via peft, BitFit, adapters (:mod:`core.finetune.lora`)."""

from core.finetune.lora import (
    AdapterError,
    apply_bitfit,
    apply_lora,
    load_adapter,
    lora_target_modules,
    merge_lora,
    save_adapter,
    trainable_parameter_report,
)
from core.finetune.transfer import (
    GradualUnfreezer,
    discriminative_param_groups,
    freeze,
    head_names,
    layer_groups,
    lock_frozen_batchnorm,
    replace_head,
    unfreeze,
)

__all__ = [
    "apply_lora", "merge_lora", "apply_bitfit", "save_adapter", "load_adapter", "trainable_parameter_report",
    "lora_target_modules", "AdapterError", "freeze", "unfreeze", "lock_frozen_batchnorm", "layer_groups",
    "GradualUnfreezer", "discriminative_param_groups", "replace_head", "head_names",
]
