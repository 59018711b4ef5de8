"""The checks an export passes before it is reported done: its output, read back, is exactly the
model it meant to write, and that model answers as the trained one does.

Both compare logits on one fixed chat prompt, relative to the largest logit:

* **exact**: the output read back (from safetensors, or through transformers' GGUF loader) against
  the intended weights in memory, i.e. the merged model rounded to the stored precision the same way
  the writer rounds it. Any wrong tensor, layout, name or tokenizer shows here, at any precision;
  the limit is float noise (``EXACT``).
* **faithful**: the output against the trained model (the adapter applied on its base in fp32,
  unmerged). This is the cost of the chosen precision, within a limit per precision
  (``TOLERANCES``); it is reported with whether the greedy reply is the same.

The merge itself is checked exactly too: merged and unmerged fp32 logits must agree to ``EXACT``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from trainer.export.errors import ExportError

FIXED_PROMPT = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
GREEDY_TOKENS = 8
EXACT = 1e-4
# Largest max|logit difference| / max|reference logit| against the trained model, by stored
# precision. Measured on the embedded model after a short run: f16 4e-3, bf16 2.9e-2, q8_0 3.5e-2.
TOLERANCES = {"f32": EXACT, "f16": 2e-2, "bf16": 1e-1, "q8_0": 1.5e-1}


@dataclass
class CheckResult:
    """How close the exported model came to the trained one."""

    relative_error: float
    """max |logit difference| / max |reference logit| on the fixed prompt."""
    tolerance: float
    same_greedy_reply: bool
    """Whether both give the same first ``GREEDY_TOKENS`` greedy tokens."""

    def summary(self) -> str:
        return (f"logits within {self.relative_error:.2e} of the trained model (limit {self.tolerance:.0e}), "
                f"greedy reply {'identical' if self.same_greedy_reply else 'differs'}")


def prompt_ids(tokenizer: Any) -> torch.Tensor:
    """The fixed prompt, rendered with the chat template and tokenized (batch of one)."""
    text = tokenizer.apply_chat_template(FIXED_PROMPT, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]


@dataclass
class Reference:
    """What a model does on the fixed prompt."""

    ids: torch.Tensor
    logits: torch.Tensor
    greedy: torch.Tensor

    @classmethod
    def of(cls, model: Any, tokenizer: Any) -> Reference:
        ids = prompt_ids(tokenizer)
        return cls(ids, _logits(model, ids), _greedy(model, ids))


def compare(model: Any, reference: Reference, tolerance: float, what: str) -> CheckResult:
    """Compare ``model`` with the reference on the fixed prompt.

    Raises:
        ExportError: the logits differ by more than ``tolerance`` of their range.
    """
    logits = _logits(model, reference.ids)
    error = float((logits - reference.logits).abs().max() / reference.logits.abs().max().clamp_min(1e-12))
    if not error <= tolerance:
        raise ExportError(
            f"{what}: logits differ by {error:.2e} of their range (limit {tolerance:.0e}); the export "
            "was not written, report this as a bug"
        )
    return CheckResult(error, tolerance, torch.equal(_greedy(model, reference.ids), reference.greedy))


def check_same_tokens(tokenizer: Any, reference: Reference, what: str) -> None:
    """The exported tokenizer turns the fixed prompt into the same ids.

    Raises:
        ExportError: it does not.
    """
    ids = prompt_ids(tokenizer)
    if not torch.equal(ids, reference.ids):
        raise ExportError(f"the tokenizer of {what} splits the chat prompt differently from the trained model's")


def _logits(model: Any, ids: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(input_ids=ids).logits.float()


def _greedy(model: Any, ids: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=GREEDY_TOKENS,
                             min_new_tokens=GREEDY_TOKENS, do_sample=False, top_p=None, top_k=None,
                             temperature=None, pad_token_id=0)
    return out[0, ids.shape[1]:]
