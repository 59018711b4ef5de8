"""Two kernels of the training step alone, ours against the stock one, side by side in one process.

    python -m benchmarks.kernels attention [--model models/SmolLM2-135M-Instruct] \
        [--data benchmarks/data/chat_mixed.jsonl] [--lengths 64 128 256 512 1024] [--dtype float32]
    python -m benchmarks.kernels loss [--model models/SmolLM2-135M-Instruct] [--positions 128 676]

``attention``: for each length, forward + backward of one causal example with the model's head
counts in bf16 (or ``--dtype``), the way ``sdpa_packed`` calls it while training (``trainer/model/attention.py``):
the flash kernel with the key/value heads repeated for each query head, and
``trainer/model/block_attention.py`` with the heads grouped. With ``--data`` it also sums both over
the lengths of the file's examples (templated as training renders them), and the mix that training
uses (block attention up to ``MAX_TOKENS`` tokens, flash above).

``loss``: the cross-entropy of bf16 logits at that many labelled positions over the model's
vocabulary, transformers' way (``cross_entropy`` on their fp32 copy) against
``trainer/model/label_logits.py``, forward + backward and forward alone (as the gate measures).
Each pair alternates, so both see the same load.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoTokenizer

from trainer.model import block_attention
from trainer.model.label_logits import token_losses


def flash(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float) -> torch.Tensor:
    groups = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    return F.scaled_dot_product_attention(query, key, value, is_causal=True, scale=scale)


def seconds(kernel, tokens: int, heads: int, kv_heads: int, dim: int, repeats: int,
            dtype: torch.dtype = torch.bfloat16) -> float:
    """Mean seconds of one forward + backward after a warm-up."""
    query = torch.randn(1, heads, tokens, dim, dtype=dtype, requires_grad=True)
    key, value = (torch.randn(1, kv_heads, tokens, dim, dtype=dtype, requires_grad=True) for _ in range(2))
    grad = torch.randn(1, heads, tokens, dim, dtype=dtype)
    kernel(query, key, value, dim**-0.5).backward(grad)
    started = time.perf_counter()
    for _ in range(repeats):
        kernel(query, key, value, dim**-0.5).backward(grad)
    return (time.perf_counter() - started) / repeats


def file_lengths(path: Path, tokenizer) -> list[int]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [len(tokenizer.apply_chat_template(r["messages"], tokenize=True, return_dict=True)["input_ids"]) for r in rows]


def attention(args: argparse.Namespace, config) -> None:
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    dtype = getattr(torch, args.dtype)
    print(f"{heads} query heads, {kv_heads} key/value heads, head size {dim}, {args.dtype}, "
          f"{torch.get_num_threads()} threads")
    for tokens in args.lengths:
        theirs = seconds(flash, tokens, heads, kv_heads, dim, args.repeats, dtype)
        ours = seconds(block_attention.block_causal_attention, tokens, heads, kv_heads, dim, args.repeats, dtype)
        print(f"{tokens:>5} tokens: flash {theirs * 1e3:7.2f} ms, blocks {ours * 1e3:7.2f} ms, {theirs / ours:.2f}x")
    if args.data:
        lengths = file_lengths(args.data, AutoTokenizer.from_pretrained(args.model))
        cache: dict[int, tuple[float, float]] = {}
        for tokens in lengths:
            if tokens not in cache:
                cache[tokens] = (seconds(flash, tokens, heads, kv_heads, dim, 3, dtype),
                                 seconds(block_attention.block_causal_attention, tokens, heads, kv_heads, dim, 3, dtype))
        all_flash = sum(cache[t][0] for t in lengths)
        mixed = sum(cache[t][1] if t <= block_attention.MAX_TOKENS else cache[t][0] for t in lengths)
        print(f"{args.data} ({len(lengths)} examples, one layer): flash {all_flash:.3f} s, "
              f"blocks up to {block_attention.MAX_TOKENS} tokens {mixed:.3f} s, {all_flash / mixed:.2f}x")


def stock_losses(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), targets, ignore_index=-100, reduction="none")


def loss_seconds(losses, logits: torch.Tensor, targets: torch.Tensor, repeats: int, backward: bool) -> float:
    """Mean seconds of the per-position losses (and their backward) after a warm-up."""
    def once() -> None:
        if backward:
            leaf = logits.detach().requires_grad_()
            losses(leaf, targets).sum().backward()
        else:
            with torch.inference_mode():
                losses(logits, targets)

    once()
    started = time.perf_counter()
    for _ in range(repeats):
        once()
    return (time.perf_counter() - started) / repeats


def loss(args: argparse.Namespace, config) -> None:
    print(f"vocabulary {config.vocab_size}, bf16 logits, {torch.get_num_threads()} threads")
    generator = torch.Generator().manual_seed(0)
    for positions in args.positions:
        logits = (torch.randn(positions, config.vocab_size, generator=generator) * 4).to(torch.bfloat16)
        targets = torch.randint(0, config.vocab_size, (positions,), generator=generator)
        for backward, what in ((True, "forward + backward"), (False, "forward")):
            theirs = loss_seconds(stock_losses, logits, targets, args.repeats, backward)
            ours = loss_seconds(token_losses, logits, targets, args.repeats, backward)
            print(f"{positions:>5} positions, {what}: fp32 copy {theirs * 1e3:7.2f} ms, "
                  f"chunked {ours * 1e3:7.2f} ms, {theirs / ours:.2f}x")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kernel", choices=["attention", "loss"])
    parser.add_argument("--model", type=Path, default=Path("models/SmolLM2-135M-Instruct"))
    parser.add_argument("--data", type=Path, help="attention: chat JSONL whose example lengths to sum over")
    parser.add_argument("--lengths", type=int, nargs="+", default=[64, 128, 256, 512, 1024],
                        help="attention: example lengths")
    parser.add_argument("--positions", type=int, nargs="+", default=[128, 676],
                        help="loss: labelled positions (676: the largest step of the throughput benchmark)")
    parser.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16",
                        help="attention: the dtype of queries, keys and values")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    config = AutoConfig.from_pretrained(args.model)
    (attention if args.kernel == "attention" else loss)(args, config)


if __name__ == "__main__":
    main()
