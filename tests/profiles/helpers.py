"""Small helpers shared by the profile tests."""

from __future__ import annotations

import torch


def pad_left(tokenizer, rows: list[list[int]]) -> torch.Tensor:
    """Stack id lists into one tensor, padding on the left as batched generation does."""
    width = max(len(row) for row in rows)
    return torch.tensor([[tokenizer.pad_token_id] * (width - len(row)) + row for row in rows])


def left_padded(tokenizer, texts: list[str]) -> torch.Tensor:
    """Encode ``texts`` into one left-padded id tensor."""
    return pad_left(tokenizer, [tokenizer.encode(text, add_special_tokens=False) for text in texts])
