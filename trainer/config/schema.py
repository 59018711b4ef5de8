"""The ``config.json`` schema, declared once.

Every field carries a docstring: pydantic turns it into the field's ``description`` in the JSON
Schema that ``trainctl config schema`` exports, so editors can complete and explain config.json.
Unknown keys are errors (``extra="forbid"``); cross-field rules live in validators.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, PositiveInt, field_validator, model_validator

from trainer.config.distributed import DistributedSettings
from trainer.config.gate import GateSettings
from trainer.config.http import HttpSettings
from trainer.config.replay import ReplaySettings
from trainer.config.schema_base import StrictModel
from trainer.config.tracking import TrackingSettings

DEFAULT_BASE_MODEL = "SmolLM2-135M-Instruct"


class LoraSettings(StrictModel):
    """LoRA adapter shape. Ignored when ``method`` is ``full``."""

    r: int = Field(16, ge=1, le=1024)
    """Rank of the low-rank update matrices. Higher learns more, costs more memory."""

    alpha: int = Field(32, ge=1)
    """Scaling numerator: the update is multiplied by alpha / r."""

    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    """Dropout applied to the adapter input during training. 0, as in PEFT, Unsloth, LLaMA-Factory
    and torchtune, lets training fold the adapter into the frozen weight and draw no random masks
    (about 20% faster steps on CPU than 0.05); on the embedded model 0.05 gave no lower held-out loss
    over one epoch (docs/learning.md, "LoRA dropout"); many epochs over a small file were not measured."""

    target_modules: list[str] | Literal["all-linear"] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"], min_length=1
    )
    """Names of the linear layers that get an adapter (suffix match, as in PEFT), or ``all-linear``
    for every linear layer but the output head (PEFT's shorthand; works for every family, e.g.
    Phi-3's fused ``qkv_proj``)."""

    use_rslora: bool = False
    """Rank-stabilized LoRA: scale the update by alpha / sqrt(r) instead of alpha / r, which keeps
    high ranks learning (PEFT ``use_rslora``)."""

    use_dora: bool = False
    """Weight-decomposed LoRA (DoRA): learn each weight's magnitude apart from its direction (PEFT
    ``use_dora``). Adds a magnitude vector per adapted layer; steps are slower."""

    modules_to_save: list[str] = Field(default_factory=list)
    """Modules trained in full and saved with the adapter (PEFT ``modules_to_save``), e.g.
    ``["embed_tokens", "lm_head"]`` when the chat template uses tokens the base model never trained."""

    @field_validator("target_modules", mode="before")
    @classmethod
    def _one_shorthand(cls, value: object) -> object:
        if isinstance(value, str) and value != "all-linear":
            raise ValueError(f'{value!r} is not a list of module names; give a list or "all-linear"')
        return value


class Hyperparams(StrictModel):
    """Optimisation and numerics."""

    fp_precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    """Compute precision. ``auto`` picks bf16 where the hardware runs it (CUDA with bf16, or a CPU
    with bf16 matmul support), else fp32. Master weights stay fp32; bf16/fp16 run as autocast."""

    max_length: int = Field(1024, ge=16, le=1_048_576)
    """Longest example in tokens; longer ones are truncated or dropped (see ``data.on_overlength``).
    Must not exceed the model's position limit."""

    batch_size: int = Field(4, ge=1)
    """Examples per device per step."""

    gradient_accumulation: int = Field(1, ge=1)
    """Steps whose gradients are summed before one optimizer update."""

    learning_rate: float = Field(2e-4, gt=0.0, le=1.0)
    """Peak learning rate (after warm-up)."""

    epochs: float = Field(1.0, gt=0.0, le=1000.0)
    """Passes over each file. Fractions are allowed."""

    max_steps: int | None = Field(None, ge=1)
    """If set, stop after this many optimizer steps, overriding ``epochs``."""

    warmup_ratio: float = Field(0.03, ge=0.0, lt=1.0)
    """Share of the steps spent warming the learning rate up from 0."""

    weight_decay: float = Field(0.0, ge=0.0, le=1.0)
    """AdamW weight decay."""

    lr_scheduler: Literal[
        "linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts", "polynomial"
    ] = "cosine"
    """Learning-rate schedule after warm-up (names as in transformers' ``SchedulerType``)."""

    max_grad_norm: float = Field(1.0, gt=0.0)
    """Gradients are clipped to this global norm."""

    use_gradient_checkpointing: bool | Literal["auto"] = "auto"
    """Recompute activations in the backward pass (non-reentrant): less memory, about a third
    slower per step (see docs/performance.md). ``auto`` turns it on only when the estimated
    activations of a full step would take more than half of the free memory of the device."""

    attn_implementation: Literal["auto", "flash_attention_2", "sdpa", "sdpa_packed", "eager"] = "auto"
    """Attention kernel. ``auto`` uses flash_attention_2 when flash-attn is installed, CUDA is present
    and the precision is bf16/fp16, otherwise PyTorch SDPA: ``sdpa_packed`` (SDPA run per example,
    instead of over the whole row with a block mask) when ``padding_free`` is on, else ``sdpa``."""

    padding_free: bool = True
    """Concatenate the examples of a batch into one row with per-example position ids instead of
    padding them (``DataCollatorWithFlattening``). Same loss, no compute spent on padding."""

    max_tokens_per_batch: int | None = Field(None, ge=16)
    """If set, a step takes consecutive examples until the next would exceed this many tokens,
    instead of ``batch_size`` examples, so short examples fill the step (``batch_size`` is then
    ignored). Must be at least ``max_length``. None: ``batch_size`` examples per step."""

    use_liger: bool = False
    """Use Liger kernels (fused RMSNorm, SwiGLU, RoPE and linear cross-entropy). Needs the
    ``liger-kernel`` package and a CUDA GPU; ignored, with a log line saying why, otherwise."""

    torch_compile: bool = False
    """Compile the model with ``torch.compile``. Used on CUDA only: on CPU the compile time outweighs
    the gain for runs of the length a file gets."""

    seed: int = 42
    """Seed for weight init of new adapters, data order and dropout."""


class DataSettings(StrictModel):
    """How rows of an input file become training examples."""

    on_overlength: Literal["truncate", "drop"] = "truncate"
    """What to do with an example longer than ``hyperparams.max_length``: cut it, or leave it out."""

    on_bad_row: Literal["skip", "reject"] = "skip"
    """``skip`` trains on the good rows of a file and reports the bad ones; ``reject`` fails the whole
    file if any row is bad."""

    cache_tokenized: bool = True
    """Keep tokenized files under ``cache/tokenized/`` in the base dir, keyed by the SHA-256 of the
    file, tokenizer, profile and tokenization settings, so a file trained again is not re-tokenized."""

    tokenize_workers: Literal["auto"] | PositiveInt = "auto"
    """Processes that validate and tokenize a large file, each a part of it, to the same features as
    one: ``auto`` uses the CPU cores this process may run on, at most 8; ``1`` tokenizes in the
    daemon's (or command's) own process. A file gets one worker per 10,000 lines at most, so small
    files never start any."""


class EvalSettings(StrictModel):
    """Held-out evaluation."""

    split_ratio: float = Field(0.1, ge=0.0, lt=1.0)
    """Share of each file's examples held out for evaluation (and for the promotion gate); 0
    disables the split. A file too small to keep a row for training is trained whole."""

    min_examples: int = Field(1, ge=1)
    """Smallest held-out set taken when ``split_ratio`` is above 0 (if the file has enough rows)."""

    max_examples: int = Field(256, ge=1)
    """Largest held-out set taken from one file, so that evaluating a big file stays cheap."""

    file: str | None = None
    """A fixed JSONL file to evaluate on instead of a split (relative paths: from the base dir)."""

    eval_steps: int | None = Field(None, ge=1)
    """Evaluate every this many steps (and always at the end). None: only at the end."""

    early_stopping_patience: int | None = Field(None, ge=1)
    """Stop a file's training after this many evaluations without improvement. None: never."""

    seed: int = 1234
    """Seed of the held-out split, fixed so that the same file always splits the same way."""


class CheckpointSettings(StrictModel):
    """Step checkpoints used to resume an interrupted run."""

    save_steps: int = Field(50, ge=1)
    """Write a resumable checkpoint every this many optimizer steps."""

    keep_last: int = Field(2, ge=1)
    """Complete checkpoints kept per run (the best one and the resume source are always kept)."""

    resume: bool = True
    """Resume automatically from the latest complete checkpoint of the same run."""

    log_steps: int = Field(10, ge=1)
    """Log progress (loss, learning rate, tokens/s, ETA) every this many steps."""


class DaemonSettings(StrictModel):
    """Behaviour of ``trainctl daemon``."""

    stable_seconds: float = Field(2.0, ge=0.0)
    """A file is claimed only after its size and mtime stayed unchanged this long."""

    rescan_seconds: float = Field(10.0, gt=0.0)
    """Rescan the inbox at least this often, even without file-system events."""

    max_attempts: int = Field(3, ge=1)
    """Training attempts per file before it is moved to ``queue/failed/``."""

    keep_snapshots: int = Field(5, ge=1)
    """Snapshots kept (plus pinned ones; the current one is never deleted)."""

    stop_timeout_seconds: float = Field(60.0, gt=0.0)
    """After SIGTERM, how long the training child may take to checkpoint before it is killed."""

    on_promote: str | None = None
    """Shell command run after each promotion and rollback (e.g. to reload an inference server), with
    TRAINCTL_EVENT, TRAINCTL_SNAPSHOT_ID, TRAINCTL_SNAPSHOT_PATH and TRAINCTL_PREVIOUS_ID set; its
    output goes to the daemon log and its exit status to a ``promotion_hook`` event. None: no hook."""

    hook_timeout_seconds: float = Field(120.0, gt=0.0)
    """How long ``on_promote`` may run before it is killed; training waits at most this long for it."""

    warm_child: bool = True
    """Keep the next training child started ahead: it imports and warms up while the daemon waits,
    so a file's training starts seconds sooner. A fresh one per file; it holds about 0.5 GB of RAM
    while it waits, and its CUDA context on a GPU. Off: each file starts a new process. Training
    under torchrun always starts anew."""


class TrainConfig(StrictModel):
    """Everything a training run needs; the content of ``config.json``."""

    model_config = ConfigDict(
        extra="forbid", use_attribute_docstrings=True, validate_default=True, populate_by_name=True, strict=True
    )

    schema_ref: str | None = Field(None, alias="$schema")
    """Optional path or URL of the JSON Schema, for editors. Ignored by training."""

    base_model: str = DEFAULT_BASE_MODEL
    """Model to start from when ``current_model/`` is empty: the name of a model prepared in the
    models home (``$TRAINCTL_HOME/models``, the installation's ``models/`` or
    ``~/.local/share/trainctl/models``), a local directory (relative paths are resolved from the base
    dir) or a hub id. The default is the embedded SmolLM2-135M-Instruct, prepared once for every base
    dir by ``trainctl prepare-model``."""

    model_display_name: str = Field("SmolLM2-135M-Instruct (fine-tuned)", min_length=1)
    """Human-readable name shown in status output."""

    profile: str = "default"
    """Profile that shapes the data: system prompt template, example transform, logits processors.
    See ``profiles/``."""

    method: Literal["lora", "qlora", "full"] = "lora"
    """``lora`` trains a PEFT adapter; ``qlora`` trains one on a base loaded in 4 bit with bitsandbytes
    (NF4; needs a CUDA GPU and ``pip install bitsandbytes``); ``full`` updates every weight."""

    lora: LoraSettings = Field(default_factory=LoraSettings)
    """Adapter shape for ``method=lora``."""

    hyperparams: Hyperparams = Field(default_factory=Hyperparams)
    """Optimisation settings."""

    data: DataSettings = Field(default_factory=DataSettings)
    """Row handling."""

    eval: EvalSettings = Field(default_factory=EvalSettings)
    """Evaluation settings."""

    checkpoint: CheckpointSettings = Field(default_factory=CheckpointSettings)
    """Resumable step checkpoints."""

    daemon: DaemonSettings = Field(default_factory=DaemonSettings)
    """Inbox daemon settings."""

    gate: GateSettings = Field(default_factory=GateSettings)
    """Promotion gate: a trained file's model replaces current_model only if its losses allow it."""

    replay: ReplaySettings = Field(default_factory=ReplaySettings)
    """Rows of earlier promoted files mixed into each new file's training, against forgetting."""

    distributed: DistributedSettings = Field(default_factory=DistributedSettings)
    """Several training processes (GPUs, machines) under torchrun, DDP or FSDP; one by default."""

    http: HttpSettings = Field(default_factory=HttpSettings)
    """The daemon's HTTP API, dashboard and Prometheus ``/metrics``."""

    tracking: TrackingSettings = Field(default_factory=TrackingSettings)
    """Experiment trackers (TensorBoard always; wandb or mlflow when asked for)."""

    trust_remote_code: bool = False
    """Allow model repositories to run their own Python code. Off: only enable for models you trust."""

    @property
    def adapter(self) -> bool:
        """Whether ``method`` trains a LoRA adapter (``lora`` or ``qlora``)."""
        return self.method != "full"

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, name: str) -> str:
        from profiles import available_profiles

        if name not in available_profiles():
            raise ValueError(
                f"unknown profile {name!r}; choose one of: {', '.join(available_profiles())}"
            )
        return name

    @model_validator(mode="after")
    def _check_cross_fields(self) -> "TrainConfig":
        if self.eval.file and "split_ratio" in self.eval.model_fields_set and self.eval.split_ratio > 0:
            raise ValueError("set either eval.file or eval.split_ratio, not both")
        budget = self.hyperparams.max_tokens_per_batch
        if budget is not None and budget < self.hyperparams.max_length:
            raise ValueError(
                f"hyperparams.max_tokens_per_batch ({budget}) must be at least hyperparams.max_length "
                f"({self.hyperparams.max_length}) so that every example fits in a step; raise it or "
                "lower max_length"
            )
        return self
