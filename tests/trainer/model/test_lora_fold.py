"""Folded LoRA (dropout 0) gives PEFT's loss and gradients for every model family, and is left out
where it would not be exact."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import (
    AutoModelForCausalLM,
    Gemma2Config,
    LlamaConfig,
    MistralConfig,
    Phi3Config,
    Qwen2Config,
)

from trainer.model.lora_fold import fold_lora, foldable, unfold_lora

SHAPE = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=128)
FAMILIES = {
    "llama": lambda: LlamaConfig(**SHAPE),
    "qwen2": lambda: Qwen2Config(**SHAPE),
    "gemma2": lambda: Gemma2Config(**SHAPE, head_dim=16),
    "mistral": lambda: MistralConfig(**SHAPE),
    "phi3": lambda: Phi3Config(**SHAPE, pad_token_id=0),
}


def _lora_model(family: str, dtype: torch.dtype, dropout: float = 0.0):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(FAMILIES[family](), dtype=dtype, attn_implementation="eager")
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules="all-linear", task_type="CAUSAL_LM")
    model = get_peft_model(model, lora, autocast_adapter_dtype=True)
    for name, param in model.named_parameters():
        if "lora_B" in name:  # B starts at zero; make the adapter matter for the output
            torch.nn.init.normal_(param, std=0.05)
    model.train()
    return model


def _loss_and_grads(model, autocast: bool):
    torch.manual_seed(1)
    ids = torch.randint(0, 128, (2, 24))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = model(input_ids=ids, labels=ids, use_cache=False).loss
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return loss.item(), grads


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize(("base_dtype", "autocast", "tolerance"), [
    (torch.float32, False, 1e-5),   # fp32 training: exact up to summation order
    (torch.bfloat16, True, 3e-2),   # the default CPU/GPU path: bf16 base, bf16 autocast, fp32 adapter
])
def test_folded_lora_gives_peft_loss_and_gradients(family, base_dtype, autocast, tolerance):
    model = _lora_model(family, base_dtype)
    loss, grads = _loss_and_grads(model, autocast)

    assert fold_lora(model) > 0
    folded_loss, folded_grads = _loss_and_grads(model, autocast)

    assert folded_loss == pytest.approx(loss, rel=tolerance)
    assert folded_grads.keys() == grads.keys() and grads
    for name, grad in grads.items():
        scale = grad.abs().max().clamp_min(1e-8)
        assert ((folded_grads[name] - grad).abs().max() / scale) < tolerance * 3, name


def test_eval_mode_and_unfold_use_peft_forward_and_dropout_is_never_folded():
    model = _lora_model("llama", torch.float32)
    ids = torch.randint(0, 128, (1, 10))
    fold_lora(model)
    model.eval()
    with torch.no_grad():
        folded_eval = model(input_ids=ids).logits
    unfold_lora(model)
    with torch.no_grad():
        peft_eval = model(input_ids=ids).logits

    assert torch.equal(folded_eval, peft_eval)
    assert not any(hasattr(m, "_unfolded_forward") for m in model.modules())
    with_dropout = _lora_model("llama", torch.float32, dropout=0.1)
    assert fold_lora(with_dropout) == 0 and not any(foldable(m) for m in with_dropout.modules())
