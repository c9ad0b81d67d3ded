"""genlab.finetune: start from a pretrained model (a genlab checkpoint or a local Hugging Face
directory) and adapt it — full fine-tuning, transfer learning with frozen layers (plus
discriminative learning rates and layer-wise unfreezing), or LoRA.

Everything here works in place on the model and takes plain arguments or the validated
config sections themselves (`FinetuneConfig`, `LoraSection`). `peft`/`transformers` are
imported only when LoRA or an HF model is used.
"""

from genlab.finetune.freeze import (
    GradualUnfreezer,
    count_parameters,
    embedding_modules,
    find_blocks,
    freeze_blocks,
    freeze_patterns,
    layer_depths,
    lr_scales,
    output_head,
    reinit_head,
    set_trainable,
)
from genlab.finetune.groups import set_scaled_lr, trainable_param_groups
from genlab.finetune.lora import (
    apply_lora,
    default_targets,
    has_lora,
    load_adapter,
    lora_state_dict,
    merge_lora,
    save_adapter,
    trainable_names,
)
from genlab.finetune.prepare import (
    FinetuneSetup,
    load_pretrained_gpt,
    optimizer_groups,
    prepare_model,
    resolve_checkpoint,
)
from genlab.finetune.vocab import (
    check_vocab,
    match_vocab,
    model_vocab_size,
    resize_gpt_vocab,
    resize_vocab,
)

__all__ = [
    "FinetuneSetup",
    "GradualUnfreezer",
    "apply_lora",
    "check_vocab",
    "count_parameters",
    "default_targets",
    "embedding_modules",
    "find_blocks",
    "freeze_blocks",
    "freeze_patterns",
    "has_lora",
    "layer_depths",
    "load_adapter",
    "load_pretrained_gpt",
    "lora_state_dict",
    "lr_scales",
    "match_vocab",
    "merge_lora",
    "model_vocab_size",
    "optimizer_groups",
    "output_head",
    "prepare_model",
    "reinit_head",
    "resize_gpt_vocab",
    "resize_vocab",
    "resolve_checkpoint",
    "save_adapter",
    "set_scaled_lr",
    "set_trainable",
    "trainable_names",
    "trainable_param_groups",
]
