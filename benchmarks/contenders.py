"""The trainers the throughput benchmark compares, one per process.

    python -m benchmarks.contenders NAME SPEC.json RESULT.json

Every contender trains the same LoRA adapter (this project's default ``lora`` settings, or the
spec's ``lora_dropout``) with the same optimiser schedule (the default ``hyperparams``) on the same
examples in the same order: ``train_sampling_strategy="sequential"`` and ``set_seed`` before the
model is loaded. Logging is every step for all, so the loss after the same tokens can be compared.

* ``ours`` is the daemon's real step path: a run folder opened as the training child opens it, and
  ``start_job`` (core/runs/job.py) assembling ``UltimateTrainer`` with every callback the daemon
  installs: the progress log, the NaN/Inf guard, TensorBoard, checkpoint bookkeeping and the
  child's status/event reporting (``core.child.progress.ProgressCallback``). Our config has no
  sampling option, so the sequential order is set on the assembled ``Trainer``'s arguments.
  Variants: ``ours_gc`` (gradient checkpointing forced on), ``ours_budget``
  (``max_tokens_per_batch``: its steps hold other examples, so its loss is not comparable per
  step), ``ours_all_logits`` (logits at every position instead of the labelled ones only).
* ``hf`` (defaults): plain ``transformers.Trainer`` with dynamic padding
  (``DataCollatorForSeq2Seq``), ``TrainingArguments`` defaults (fp32, no gradient checkpointing).
* ``trl`` (defaults): TRL ``SFTTrainer`` as its docs recommend for training on chat replies only:
  a conversational prompt/completion dataset (``completion_only_loss`` on by default) and
  ``SFTConfig`` defaults (bf16, gradient checkpointing, no padding-free batches). Its completion
  mask also covers the newline the chat template writes after ``<|im_end|>``: one extra, easily
  predicted label per example, which lowers its mean loss a little (about 1/n for a reply of n
  tokens) without any difference in the model.
* ``hf_tuned``: what an experienced user switches on with one flag each: padding-free batches
  (``DataCollatorWithFlattening``), ``bf16=True``, SDPA attention, the frozen base in bf16.
* ``trl_tuned``: ``SFTConfig(padding_free=True, bf16=True, gradient_checkpointing=False)``, the
  base in bf16, SDPA. TRL does not enforce ``max_length`` on padding-free batches without packing
  (it refuses one), so its rows are handed over pre-tokenized and truncated to ``max_length``, with
  ``max_length=None`` and the same labels as ``hf`` (no extra newline label).
* On a device without native bf16 matmuls (a CPU without AVX512-BF16 or AMX, where bf16 is
  emulated and slower than fp32) the tuned peers run in fp32 instead, as an experienced user would
  there: :func:`tuned_bf16`, the same test ours uses to choose (``trainer/model/hardware.py``).

``hf``, ``hf_tuned`` and ``trl_tuned`` train on exactly the labels ours trains on: the reply
through its ``<|im_end|>``.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from transformers import set_seed

from benchmarks.measure import CountingCollator, StepClock, summarize
from core.child.progress import ProgressCallback, StopFlag
from core.runs.job import start_job
from core.runs.run import data_file_record, start_run
from core.state.events import EventLog
from core.state.layout import BaseDir
from core.state.status import StatusFile
from trainer.builders import build_lora_config
from trainer.config import TrainConfig, config_to_dict, parse_config
from trainer.model.hardware import select_precision

TRL_MISSING = "TRL is not installed: pip install -e '.[bench]'"


def shared_config(spec: dict[str, Any], **hyperparams: Any) -> TrainConfig:
    """Our default config with the benchmark's batch, length, steps, seed and LoRA dropout (when the
    spec sets one), and ``hyperparams``."""
    lora = {"dropout": spec["lora_dropout"]} if spec.get("lora_dropout") is not None else {}
    return parse_config(
        {
            "lora": lora,
            "hyperparams": {
                "batch_size": spec["batch_size"],
                "max_length": spec["max_length"],
                "max_steps": spec["steps"],
                "seed": spec["seed"],
                **hyperparams,
            },
            "checkpoint": {"log_steps": 1, "save_steps": 10**6},
            "eval": {"split_ratio": 0.0},  # the peers hold nothing out: every contender trains the same rows
        },
        Path("config.json"),
    )


def common_arguments(config: TrainConfig, output_dir: str) -> dict[str, Any]:
    """The ``TrainingArguments`` the peers share with our default config."""
    hp = config.hyperparams
    return dict(
        output_dir=output_dir,
        per_device_train_batch_size=hp.batch_size,
        max_steps=hp.max_steps,
        learning_rate=hp.learning_rate,
        lr_scheduler_type=hp.lr_scheduler,
        warmup_steps=hp.warmup_ratio,
        weight_decay=hp.weight_decay,
        max_grad_norm=hp.max_grad_norm,
        seed=hp.seed,
        train_sampling_strategy="sequential",
        use_cpu=not torch.cuda.is_available(),
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
    )


def chat_rows(path: str) -> list[dict[str, Any]]:
    """The rows of a chat JSONL file."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def train_counted(trainer: Any, clock: StepClock) -> CountingCollator:
    """Train with the trainer's collator wrapped in a token counter and ``clock`` timing the steps."""
    counter = CountingCollator(trainer.data_collator)
    trainer.data_collator = counter
    trainer.add_callback(clock)
    trainer.train()
    return counter


def reply_labels_dataset(spec: dict[str, Any], tokenizer: Any) -> Any:
    """The chat rows tokenized with the chat template, labels on the reply through its ``<|im_end|>``,
    truncated to ``max_length``: the tokens and labels ours trains on."""
    from datasets import Dataset

    def tokenize(row: dict[str, Any]) -> dict[str, Any]:
        messages = row["messages"]
        prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(messages, tokenize=False)
        n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        n_reply_end = len(tokenizer(full.rstrip(), add_special_tokens=False)["input_ids"])
        ids = tokenizer(full, add_special_tokens=False)["input_ids"]
        labels = [-100] * n_prompt + ids[n_prompt:n_reply_end] + [-100] * (len(ids) - n_reply_end)
        return {"input_ids": ids[: spec["max_length"]], "labels": labels[: spec["max_length"]]}

    return Dataset.from_list(chat_rows(spec["data"])).map(tokenize, remove_columns=["messages"])


def tuned_bf16() -> bool:
    """Whether a tuned peer trains in bf16 here: where the device runs bf16 natively."""
    return select_precision("auto").value == "bf16"


def _hf(spec: dict[str, Any], workdir: Path, name: str, tuned: bool) -> dict[str, Any]:
    """HF ``Trainer``: dynamic padding in fp32 (defaults), or padding-free, bf16 and SDPA (tuned)."""
    from peft import get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        DataCollatorWithFlattening,
        Trainer,
        TrainingArguments,
    )

    config = shared_config(spec)
    set_seed(config.hyperparams.seed)
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(spec["model"])
    bf16 = tuned and tuned_bf16()
    loading = {"dtype": torch.bfloat16 if bf16 else torch.float32, "attn_implementation": "sdpa"} if tuned \
        else {"dtype": torch.float32}
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(spec["model"], **loading), build_lora_config(config))
    tokenize_started = time.perf_counter()
    dataset = reply_labels_dataset(spec, tokenizer)
    tokenize_s = time.perf_counter() - tokenize_started
    collator = (
        DataCollatorWithFlattening(return_position_ids=True, separator_id=-100) if tuned
        else DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
    )
    trainer = Trainer(
        model=model, args=TrainingArguments(**common_arguments(config, str(workdir / "out")), bf16=bf16),
        train_dataset=dataset, data_collator=collator, processing_class=tokenizer,
    )
    setup_s = time.perf_counter() - started
    clock = StepClock()
    counter = train_counted(trainer, clock)
    return summarize(
        name, clock, counter, spec["steps"], setup_s=round(setup_s, 2), tokenize_s=round(tokenize_s, 2),
        precision="bf16 autocast, bf16 base" if bf16 else "fp32", attention=model.config._attn_implementation,
        gradient_checkpointing=False, batching="padding-free" if tuned else "dynamic padding",
    )


def run_hf(spec: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """Plain HF ``Trainer`` with its defaults (see the module docstring)."""
    return _hf(spec, workdir, "hf", tuned=False)


def run_hf_tuned(spec: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """HF ``Trainer`` with ``DataCollatorWithFlattening``, ``bf16=True`` and SDPA."""
    return _hf(spec, workdir, "hf_tuned", tuned=True)


def _trl(spec: dict[str, Any], workdir: Path, name: str, tuned: bool) -> dict[str, Any]:
    """TRL ``SFTTrainer`` with ``SFTConfig`` defaults, or padding-free without checkpointing (tuned)."""
    try:
        from trl import SFTConfig, SFTTrainer
    except ImportError:
        raise SystemExit(TRL_MISSING) from None
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = shared_config(spec)
    set_seed(config.hyperparams.seed)
    started = time.perf_counter()
    bf16 = tuned and tuned_bf16()
    tuning = {"padding_free": True, "bf16": bf16, "gradient_checkpointing": False} if tuned else {}
    # TRL refuses max_length with padding-free batches (it would not enforce it): the tuned rows come truncated.
    sft_config = SFTConfig(
        max_length=None if tuned else spec["max_length"], **common_arguments(config, str(workdir / "out")), **tuning
    )
    loading = {"dtype": torch.bfloat16 if bf16 else torch.float32, "attn_implementation": "sdpa"} if tuned \
        else {"dtype": torch.float32}
    model = AutoModelForCausalLM.from_pretrained(spec["model"], **loading)
    tokenizer = AutoTokenizer.from_pretrained(spec["model"])
    build_started = time.perf_counter()
    if tuned:
        dataset = reply_labels_dataset(spec, tokenizer)
    else:
        rows = chat_rows(spec["data"])
        dataset = Dataset.from_list([{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]} for r in rows])
    trainer = SFTTrainer(
        model=model, args=sft_config, train_dataset=dataset, processing_class=tokenizer,
        peft_config=build_lora_config(config),
    )
    tokenize_s = time.perf_counter() - build_started
    setup_s = time.perf_counter() - started
    clock = StepClock()
    counter = train_counted(trainer, clock)
    return summarize(
        name, clock, counter, spec["steps"], setup_s=round(setup_s, 2), tokenize_s=round(tokenize_s, 2),
        precision=("bf16 autocast, bf16 base" if tuned else "bf16") if sft_config.bf16 else "fp32",
        attention=model.config._attn_implementation,
        gradient_checkpointing=bool(sft_config.gradient_checkpointing),
        batching=("padding-free, rows pre-truncated" if tuned else "padding-free") if sft_config.padding_free
        else "dynamic padding",
    )


def run_trl(spec: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """TRL ``SFTTrainer`` with ``SFTConfig`` defaults (see the module docstring)."""
    return _trl(spec, workdir, "trl", tuned=False)


def run_trl_tuned(spec: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """TRL ``SFTTrainer`` with ``padding_free=True``, bf16, no gradient checkpointing."""
    return _trl(spec, workdir, "trl_tuned", tuned=True)


def peak_gpu_mb() -> float | None:
    """Peak GPU memory allocated by this process's tensors, in MiB; None on CPU."""
    return round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else None


def run_ours(
    spec: dict[str, Any], workdir: Path, name: str = "ours", all_logits: bool = False, **hyperparams: Any
) -> dict[str, Any]:
    """``UltimateTrainer`` as the daemon's child sets it up, with the default config (plus ``hyperparams``)."""
    config = shared_config(spec, **hyperparams)
    config_text = json.dumps(config_to_dict(config))
    data_file = Path(spec["data"])
    layout = BaseDir.at(workdir)
    layout.status_dir.mkdir(parents=True, exist_ok=True)
    set_seed(config.hyperparams.seed)
    clock = StepClock()
    progress = ProgressCallback(StatusFile(layout.status_file), EventLog(layout.events_file), data_file.name, StopFlag())
    started = time.perf_counter()
    run = start_run(layout.runs, phase="file", config=config, config_text=config_text,
                    data_files=[data_file_record(data_file)], base_dir=workdir)
    with run:
        job = start_job(
            run, config, config_text, data_file, base_dir=workdir, model_source=spec["model"],
            output_dir=run.checkpoints, label=data_file.name, extra_callbacks=[progress], tensorboard_server=False,
        )
        setup_s = time.perf_counter() - started
        job.trainer.args.train_sampling_strategy = "sequential"
        job.trainer.labelled_logits_only = not all_logits
        counter = train_counted(job.trainer, clock)
    args = job.trainer.args
    hp = config.hyperparams
    batching = "dynamic padding"
    if hp.padding_free:
        batching = "padding-free" + (f", <= {hp.max_tokens_per_batch} tokens/step" if hp.max_tokens_per_batch else "")
    return summarize(
        name, clock, counter, spec["steps"], setup_s=round(setup_s, 2),
        tokenize_s=round(getattr(job, "dataset_seconds", float("nan")), 2),
        precision=job.precision.value, attention=job.attention.value,
        gradient_checkpointing=bool(args.gradient_checkpointing or args.activation_checkpointing),
        batching=f"{batching}, lora dropout {config.lora.dropout:g}, daemon callbacks",
        model_device=str(next(job.trainer.model.parameters()).device),
    )


def run_ours_gc(spec: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """Ours with gradient checkpointing forced on (its cost in time, its saving in memory)."""
    return run_ours(spec, workdir, "ours_gc", use_gradient_checkpointing=True)


def run_ours_budget(spec: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """Ours with ``max_tokens_per_batch``: steps hold more, shorter examples (other batches)."""
    return run_ours(spec, workdir, "ours_budget", max_tokens_per_batch=spec["token_budget"])


def run_ours_all_logits(spec: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """Ours with logits at every position, as the stock loss computes them (what label-only logits save)."""
    return run_ours(spec, workdir, "ours_all_logits", all_logits=True)


CONTENDERS = {
    "ours": run_ours, "hf": run_hf, "trl": run_trl, "hf_tuned": run_hf_tuned, "trl_tuned": run_trl_tuned,
    "ours_gc": run_ours_gc, "ours_budget": run_ours_budget, "ours_all_logits": run_ours_all_logits,
}


def main(argv: list[str]) -> None:
    """Run one contender from a spec file and write its result record."""
    name, spec_path, out_path = argv
    spec = json.loads(Path(spec_path).read_text())
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as workdir:
        result = CONTENDERS[name](spec, Path(workdir))
    result["peak_gpu_mb"] = peak_gpu_mb()
    Path(out_path).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
