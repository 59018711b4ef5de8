"""Forward + backward of ``UltimateTrainer``'s own batches, timed or profiled, in one process.

    python benchmarks/step_profile.py --data benchmarks/data/chat_mixed.jsonl \\
        --model models/SmolLM2-135M-Instruct [--config '{"lora": {"dropout": 0}}'] [--profile]

For A/B questions the throughput benchmark is too coarse for (its contenders are separate
processes a minute apart, so load changes between them): the trainer is assembled as in training
(``setup()``), the first batches of its data loader are prepared once, and ``compute_loss`` +
``backward`` run over them in repeats, printing real tokens/s per repeat. No optimizer step, so
the weights and every repeat stay the same. ``--profile`` prints the torch profiler's table of
self CPU time instead. ``--ab-fold`` alternates PEFT's LoRA forward and the folded one
(``trainer/model/lora_fold.py``; needs ``"lora": {"dropout": 0}``) in every repeat, so both see
the same load. ``--ab-dropout P`` alternates the adapter with dropout ``P`` (PEFT's forward, as
``"lora": {"dropout": P}`` trains) and with dropout 0, folded (as ``"lora": {"dropout": 0}``
trains), on the same adapter and batches: what the ``lora.dropout`` default costs in speed.
``--ab-attention`` alternates the flash kernel for every example and the block attention of short
examples (``trainer/model/block_attention.py``); ``--ab-loss`` transformers' ``ForCausalLMLoss`` and
the chunked cross-entropy (``trainer/model/label_logits.py``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from peft.tuners.lora import Linear as LoraLinear
from torch import nn
from transformers.loss.loss_utils import ForCausalLMLoss

from core.train import UltimateTrainer
from trainer.config import TrainConfig
from trainer.model import block_attention
from trainer.model.label_logits import causal_lm_loss
from trainer.model.lora_fold import fold_lora, unfold_lora


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="chat JSONL")
    parser.add_argument("--model", type=Path, required=True, help="model directory")
    parser.add_argument("--config", default="{}", help="config.json overrides, as JSON")
    parser.add_argument("--batches", type=int, default=8, help="batches per repeat (the first 2 warm up)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="print the profiler table instead")
    parser.add_argument("--ab-fold", action="store_true", help="alternate PEFT's and the folded LoRA forward")
    parser.add_argument("--ab-dropout", type=float, metavar="P",
                        help="alternate LoRA dropout P (PEFT's forward) and dropout 0 (folded)")
    parser.add_argument("--ab-attention", action="store_true",
                        help="alternate the flash kernel and the block attention of short examples")
    parser.add_argument("--ab-loss", action="store_true",
                        help="alternate transformers' ForCausalLMLoss and the chunked cross-entropy")
    return parser.parse_args(argv)


def set_lora_dropout(model: nn.Module, p: float) -> None:
    """Give every LoRA linear of ``model`` dropout ``p`` (``nn.Identity`` for 0, as PEFT builds it);
    with 0 the layers are folded, else PEFT's forward runs, as in training with that dropout."""
    unfold_lora(model)
    for module in model.modules():
        if isinstance(module, LoraLinear):
            for adapter in module.lora_dropout:
                module.lora_dropout[adapter] = nn.Dropout(p) if p > 0 else nn.Identity()
    if p == 0:
        fold_lora(model)


def variants(args: argparse.Namespace) -> list[tuple[str, object]]:
    """(label, function of the model switching to it) for each variant a repeat alternates."""
    if args.ab_dropout is not None:
        return [(f"dropout {args.ab_dropout:g}", lambda m: set_lora_dropout(m, args.ab_dropout)),
                ("dropout 0, folded", lambda m: set_lora_dropout(m, 0.0))]
    if args.ab_fold:
        return [("peft", unfold_lora), ("folded", fold_lora)]
    if args.ab_attention:
        longest = block_attention.MAX_TOKENS
        return [("flash kernel", lambda m: setattr(block_attention, "MAX_TOKENS", 0)),
                (f"block attention up to {longest} tokens", lambda m: setattr(block_attention, "MAX_TOKENS", longest))]
    if args.ab_loss:
        return [("ForCausalLMLoss", lambda m: setattr(m.get_base_model(), "loss_function", ForCausalLMLoss)),
                ("chunked cross-entropy", lambda m: setattr(m.get_base_model(), "loss_function", causal_lm_loss))]
    return [("as set up", None)]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    overrides = json.loads(args.config)
    hyperparams = {"max_length": 512, "batch_size": 4, **overrides.pop("hyperparams", {})}
    config = TrainConfig.model_validate({"base_model": str(args.model), "hyperparams": hyperparams, **overrides})
    with tempfile.TemporaryDirectory(prefix="step-profile-") as workdir:
        job = UltimateTrainer(config, args.data, base_dir=Path(workdir), model_source=str(args.model),
                              output_dir=Path(workdir) / "checkpoints")
        job.setup()
        trainer, model = job.trainer, job.trainer.model
        loader = iter(trainer.get_train_dataloader())
        batches = [trainer._prepare_inputs(next(loader)) for _ in range(args.batches)]
        model.train()

        def step(batch: dict) -> None:
            with trainer.accelerator.autocast():
                labelled = (batch["labels"][:, 1:] != -100).sum()
                loss = trainer.compute_loss(model, batch, num_items_in_batch=labelled)
            loss.backward()
            model.zero_grad(set_to_none=True)

        for batch in batches[:2]:
            step(batch)
        timed = batches[2:]
        if args.profile:
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for batch in timed:
                    step(batch)
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
            return
        tokens = sum(int(b["input_ids"].numel()) for b in timed)
        for repeat in range(args.repeats):
            for label, switch in variants(args):
                if switch is not None:
                    switch(model)
                started = time.perf_counter()
                for batch in timed:
                    step(batch)
                rate = tokens / (time.perf_counter() - started)
                print(f"repeat {repeat + 1} {label}: {rate:.1f} real tok/s", flush=True)

if __name__ == "__main__":
    main()
