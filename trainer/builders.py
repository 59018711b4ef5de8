"""Builder functions: config in, library object out (torchtune's builder pattern).

Nothing here trains or touches files; ``core/train.py`` assembles these into a ``Trainer``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, TaskType
from transformers import BitsAndBytesConfig, DataCollatorForSeq2Seq, DataCollatorWithFlattening, TrainingArguments

from trainer.config import TrainConfig
from trainer.data.token_budget import GroupCollator
from trainer.data.tokenization import IGNORE_INDEX
from trainer.distributed import distributed_training_arguments
from trainer.model.hardware import autocast_dtype, select_liger, select_torch_compile

logger = logging.getLogger(__name__)


def build_lora_config(config: TrainConfig) -> LoraConfig:
    """The PEFT adapter described by ``config.lora`` (``all-linear`` is PEFT's own shorthand)."""
    targets = config.lora.target_modules
    return LoraConfig(
        r=config.lora.r,
        lora_alpha=config.lora.alpha,
        lora_dropout=config.lora.dropout,
        target_modules=targets if isinstance(targets, str) else list(targets),
        use_rslora=config.lora.use_rslora,
        use_dora=config.lora.use_dora,
        modules_to_save=list(config.lora.modules_to_save) or None,
        task_type=TaskType.CAUSAL_LM,
    )


def build_quantization_config(config: TrainConfig, precision: str) -> BitsAndBytesConfig | None:
    """QLoRA's 4-bit base for ``method=qlora`` (NF4, double quantization, matmuls in the run's
    precision, as in Dettmers et al. 2023); None for every other method."""
    if config.method != "qlora":
        return None
    compute = autocast_dtype(precision) or torch.float32
    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=compute,
    )


def build_collator(config: TrainConfig, tokenizer: Any, attention: str | None = None) -> Any:
    """Padding-free batches (one flattened row, per-example position ids) or dynamic padding.

    With ``hyperparams.max_tokens_per_batch`` the training rows are groups of examples (see
    ``trainer/data/token_budget.py``), which :class:`GroupCollator` unpacks first.

    The padding-free collator marks the first label of every example ``-100``, so no token learns
    to predict across an example boundary; the attention kernels read the position ids to keep the
    examples apart (flash-attn varlen, or a block-diagonal mask for SDPA/eager). That detection is
    skipped when the model runs with its KV cache on: ``Trainer`` turns the cache off
    (``TrainingArguments.use_cache=False``), and any direct ``model(**batch)`` call on a flattened
    batch must pass ``use_cache=False`` too, or examples attend across their boundaries.

    With ``attention="flash_attention_2"`` the collator also hands over the example boundaries
    as flash-attn's varlen arguments (``cu_seq_lens_q/k``, ``max_length_q/k``), the way transformers
    prefers them for padding-free batches, instead of having every layer derive them from the
    position ids.
    """
    if config.hyperparams.padding_free:
        collator = DataCollatorWithFlattening(
            return_position_ids=True, separator_id=IGNORE_INDEX,
            return_flash_attn_kwargs=attention == "flash_attention_2",
        )
    else:
        collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE_INDEX)
    return GroupCollator(collator) if config.hyperparams.max_tokens_per_batch else collator


def build_training_arguments(
    config: TrainConfig,
    output_dir: Path,
    precision: str,
    gradient_checkpointing: bool | None = None,
    **overrides: Any,
) -> TrainingArguments:
    """``TrainingArguments`` from config: schedule, precision, checkpointing, logging.

    ``gradient_checkpointing`` is the resolved setting (``select_gradient_checkpointing``); None
    takes ``hyperparams.use_gradient_checkpointing`` with ``auto`` as off. With
    ``max_tokens_per_batch`` a step is one group of examples, so the per-device batch is 1 group.
    Liger kernels and ``torch.compile`` are used only where ``select_liger`` and
    ``select_torch_compile`` allow them. The optimizer is transformers' default, fused AdamW, which
    also runs fused on CPU.

    ``overrides`` are passed through last (used for eval and reporting settings).
    """
    hp = config.hyperparams
    if gradient_checkpointing is None:
        gradient_checkpointing = hp.use_gradient_checkpointing is True
    liger = select_liger(hp.use_liger)
    compiled = select_torch_compile(hp.torch_compile)
    for name, choice in (("use_liger", liger), ("torch_compile", compiled)):
        if choice.value == "off" and getattr(hp, name):
            logger.info("hyperparams.%s ignored: %s", name, choice.reason)
    kwargs: dict[str, Any] = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=1 if hp.max_tokens_per_batch else hp.batch_size,
        gradient_accumulation_steps=hp.gradient_accumulation,
        learning_rate=hp.learning_rate,
        num_train_epochs=hp.epochs,
        max_steps=hp.max_steps or -1,
        warmup_steps=hp.warmup_ratio,  # values below 1 are a ratio of the total steps
        lr_scheduler_type=hp.lr_scheduler,
        weight_decay=hp.weight_decay,
        max_grad_norm=hp.max_grad_norm,
        seed=hp.seed,
        data_seed=hp.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not torch.cuda.is_available(),
        activation_checkpointing=gradient_checkpointing,
        use_liger_kernel=liger.value == "on",
        torch_compile=compiled.value == "on",
        activation_checkpointing_kwargs={"use_reentrant": False},
        logging_steps=config.checkpoint.log_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=config.checkpoint.save_steps,
        # TensorBoard is the run's own callback (trainer/callbacks.py); the other trackers go through HF.
        report_to=[name for name in config.tracking.report_to if name != "tensorboard"],
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=False,
    )
    kwargs.update(distributed_training_arguments(config))  # DDP/FSDP settings (trainer/distributed.py)
    kwargs.update(overrides)
    return TrainingArguments(**kwargs)
