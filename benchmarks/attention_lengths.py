"""One example's attention, forward and backward: PyTorch's flash kernel against block attention.

    python -m benchmarks.attention_lengths [--model models/SmolLM2-135M-Instruct] \\
        [--data benchmarks/data/chat_mixed.jsonl] [--lengths 64 128 256 512 1024]

For each length, times forward + backward of one causal example with the model's head counts in
bf16, the way ``sdpa_packed`` calls it while training (``trainer/model/attention.py``): the flash
kernel with the key/value heads repeated for each query head, and
``trainer/model/block_attention.py`` with the heads grouped. With ``--data`` it also sums both over
the lengths of the file's examples (templated as training renders them), and the mix that training
uses (block attention up to ``MAX_TOKENS`` tokens, flash above). Both run in one process,
alternating, so they see the same load.
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


def flash(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float) -> torch.Tensor:
    groups = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    return F.scaled_dot_product_attention(query, key, value, is_causal=True, scale=scale)


def seconds(attention, tokens: int, heads: int, kv_heads: int, dim: int, repeats: int) -> float:
    """Mean seconds of one forward + backward after a warm-up."""
    query = torch.randn(1, heads, tokens, dim, dtype=torch.bfloat16, requires_grad=True)
    key, value = (torch.randn(1, kv_heads, tokens, dim, dtype=torch.bfloat16, requires_grad=True) for _ in range(2))
    grad = torch.randn(1, heads, tokens, dim, dtype=torch.bfloat16)
    attention(query, key, value, dim**-0.5).backward(grad)
    started = time.perf_counter()
    for _ in range(repeats):
        attention(query, key, value, dim**-0.5).backward(grad)
    return (time.perf_counter() - started) / repeats


def file_lengths(path: Path, tokenizer) -> list[int]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [len(tokenizer.apply_chat_template(r["messages"], tokenize=True, return_dict=True)["input_ids"]) for r in rows]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/SmolLM2-135M-Instruct"))
    parser.add_argument("--data", type=Path, help="chat JSONL whose example lengths to sum over")
    parser.add_argument("--lengths", type=int, nargs="+", default=[64, 128, 256, 512, 1024])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    config = AutoConfig.from_pretrained(args.model)
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    print(f"{heads} query heads, {kv_heads} key/value heads, head size {dim}, bf16, {torch.get_num_threads()} threads")
    for tokens in args.lengths:
        theirs = seconds(flash, tokens, heads, kv_heads, dim, args.repeats)
        ours = seconds(block_attention.block_causal_attention, tokens, heads, kv_heads, dim, args.repeats)
        print(f"{tokens:>5} tokens: flash {theirs * 1e3:7.2f} ms, blocks {ours * 1e3:7.2f} ms, {theirs / ours:.2f}x")
    if args.data:
        lengths = file_lengths(args.data, AutoTokenizer.from_pretrained(args.model))
        cache: dict[int, tuple[float, float]] = {}
        for tokens in lengths:
            if tokens not in cache:
                cache[tokens] = (seconds(flash, tokens, heads, kv_heads, dim, 3),
                                 seconds(block_attention.block_causal_attention, tokens, heads, kv_heads, dim, 3))
        all_flash = sum(cache[t][0] for t in lengths)
        mixed = sum(cache[t][1] if t <= block_attention.MAX_TOKENS else cache[t][0] for t in lengths)
        print(f"{args.data} ({len(lengths)} examples, one layer): flash {all_flash:.3f} s, "
              f"blocks up to {block_attention.MAX_TOKENS} tokens {mixed:.3f} s, {all_flash / mixed:.2f}x")


if __name__ == "__main__":
    main()
