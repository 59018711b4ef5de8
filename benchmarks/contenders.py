"""The three trainers the throughput benchmark compares, one per process.

    python -m benchmarks.contenders {ours,hf,trl} SPEC.json RESULT.json

Every contender trains the same LoRA adapter (this project's default ``lora`` settings) with the
same optimiser schedule (the default ``hyperparams``) from the same fp32 master weights (transformers
5 would otherwise load the bf16 checkpoint as bf16 weights) on the same examples in the same order:
``train_sampling_strategy="sequential"`` for all three (our own config has no such option, so it is
set on the assembled ``Trainer``'s arguments), and ``set_seed`` before the model is loaded. What
differs is what each one does by default with the data and the numerics:

* ``ours``: ``UltimateTrainer`` with the default config.json (padding-free batches,
  ``fp_precision=auto``, gradient checkpointing as configured by default).
* ``hf``: plain ``transformers.Trainer`` with dynamic padding (``DataCollatorForSeq2Seq``) and
  labels on the reply through its ``<|im_end|>`` (the same tokens ours trains on),
  ``TrainingArguments`` defaults (fp32, no gradient checkpointing).
* ``ours_gc`` / ``ours_budget`` / ``ours_all_logits`` (optional): ours with gradient checkpointing
  forced on, with ``max_tokens_per_batch`` (its steps hold other examples, so its loss is not
  comparable per step), and with logits at every position instead of the labelled ones only.
* ``trl``: TRL ``SFTTrainer`` as its docs recommend for training on chat replies only: a
  conversational prompt/completion dataset (``completion_only_loss`` on by default) and
  ``SFTConfig`` defaults (bf16, gradient checkpointing, no packing).

Logging is every step for all three so that the loss after the same tokens can be compared.
TRL's completion mask also covers the newline the chat template writes after ``<|im_end|>``: one
extra, easily predicted label per example, which lowers its mean loss a little (about 1/n for a
reply of n tokens) without any difference in the model.
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
from trainer.config import TrainConfig, parse_config


def _shared(spec: dict[str, Any], **hyperparams: Any) -> TrainConfig:
    """Our default config with the benchmark's batch, length, steps and seed (and ``hyperparams``)."""
    return parse_config(
        {
            "hyperparams": {
                "batch_size": spec["batch_size"],
                "max_length": spec["max_length"],
                "max_steps": spec["steps"],
                "seed": spec["seed"],
                **hyperparams,
            },
            "checkpoint": {"log_steps": 1, "save_steps": 10**6},
        },
        Path("config.json"),
    )


def _common_arguments(config: TrainConfig, output_dir: str) -> dict[str, Any]:
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


def _chat_rows(path: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def _train(trainer: Any, clock: StepClock) -> CountingCollator:
    counter = CountingCollator(trainer.data_collator)
    trainer.data_collator = counter
    trainer.add_callback(clock)
    trainer.train()
    return counter


def run_ours(
    spec: dict[str, Any], workdir: Path, name: str = "ours", all_logits: bool = False, **hyperparams: Any
) -> dict[str, Any]:
    """``UltimateTrainer`` on a temporary base dir with the default config (plus ``hyperparams``)."""
    from core.train import UltimateTrainer

    config = _shared(spec, **hyperparams)
    set_seed(config.hyperparams.seed)
    clock = StepClock()
    job = UltimateTrainer(
        config, Path(spec["data"]), base_dir=workdir, model_source=spec["model"],
        output_dir=workdir / "checkpoints",
    )
    started = time.perf_counter()
    job.setup()
    setup_s = time.perf_counter() - started
    job.trainer.args.train_sampling_strategy = "sequential"
    job.trainer.labelled_logits_only = not all_logits
    counter = _train(job.trainer, clock)
    args = job.trainer.args
    return summarize(
        name, clock, counter, spec["steps"], setup_s=round(setup_s, 2),
        tokenize_s=round(getattr(job, "dataset_seconds", float("nan")), 2),
        precision=job.precision.value, attention=job.attention.value,
        gradient_checkpointing=bool(args.gradient_checkpointing or args.activation_checkpointing),
        batching="padding-free" + (
            f", <= {config.hyperparams.max_tokens_per_batch} tokens/step"
            if getattr(config.hyperparams, "max_tokens_per_batch", None) else ""
        ) if config.hyperparams.padding_free else "dynamic padding",
    )


def _lora(config: TrainConfig) -> Any:
    from trainer.builders import build_lora_config

    return build_lora_config(config)


def run_hf(spec: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """Plain HF ``Trainer``: chat template, reply-only labels, dynamic padding, default numerics."""
    from datasets import Dataset
    from peft import get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        Trainer,
        TrainingArguments,
    )

    config = _shared(spec)
    set_seed(config.hyperparams.seed)
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(spec["model"])
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32), _lora(config))

    def tokenize(row: dict[str, Any]) -> dict[str, Any]:
        messages = row["messages"]
        prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(messages, tokenize=False)
        n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        n_reply_end = len(tokenizer(full.rstrip(), add_special_tokens=False)["input_ids"])
        ids = tokenizer(full, add_special_tokens=False)["input_ids"]
        labels = [-100] * n_prompt + ids[n_prompt:n_reply_end] + [-100] * (len(ids) - n_reply_end)
        return {"input_ids": ids[: spec["max_length"]], "labels": labels[: spec["max_length"]]}

    tokenize_started = time.perf_counter()
    dataset = Dataset.from_list(_chat_rows(spec["data"])).map(tokenize, remove_columns=["messages"])
    tokenize_s = time.perf_counter() - tokenize_started
    trainer = Trainer(
        model=model,
        args=TrainingArguments(**_common_arguments(config, str(workdir / "out"))),
        train_dataset=dataset,
        data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100),
        processing_class=tokenizer,
    )
    setup_s = time.perf_counter() - started
    clock = StepClock()
    counter = _train(trainer, clock)
    return summarize(
        "hf", clock, counter, spec["steps"], setup_s=round(setup_s, 2), tokenize_s=round(tokenize_s, 2),
        precision="fp32", attention=model.config._attn_implementation, gradient_checkpointing=False,
        batching="dynamic padding",
    )


def run_trl(spec: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """TRL ``SFTTrainer``: conversational prompt/completion data, ``SFTConfig`` defaults."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    config = _shared(spec)
    set_seed(config.hyperparams.seed)
    started = time.perf_counter()
    rows = [{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]} for r in _chat_rows(spec["data"])]
    sft_config = SFTConfig(max_length=spec["max_length"], **_common_arguments(config, str(workdir / "out")))
    model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(spec["model"])
    build_started = time.perf_counter()
    trainer = SFTTrainer(
        model=model, args=sft_config, train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer, peft_config=_lora(config),
    )
    tokenize_s = time.perf_counter() - build_started
    setup_s = time.perf_counter() - started
    clock = StepClock()
    counter = _train(trainer, clock)
    return summarize(
        "trl", clock, counter, spec["steps"], setup_s=round(setup_s, 2), tokenize_s=round(tokenize_s, 2),
        precision="bf16" if sft_config.bf16 else "fp32", attention=model.config._attn_implementation,
        gradient_checkpointing=bool(sft_config.gradient_checkpointing),
        batching="padding-free" if sft_config.padding_free else "dynamic padding",
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


CONTENDERS = {"ours": run_ours, "hf": run_hf, "trl": run_trl, "ours_gc": run_ours_gc,
              "ours_budget": run_ours_budget, "ours_all_logits": run_ours_all_logits}


def main(argv: list[str]) -> None:
    """Run one contender from a spec file and write its result record."""
    name, spec_path, out_path = argv
    spec = json.loads(Path(spec_path).read_text())
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as workdir:
        result = CONTENDERS[name](spec, Path(workdir))
    Path(out_path).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
