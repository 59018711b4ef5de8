"""The token generation must stop at: the chat template's end of an assistant turn.

Training labels each assistant reply together with the token its template closes the turn with
(``trainer.data.chat_masking.end_of_turn_marker``: ``<|im_end|>`` for ChatML, ``<|eot_id|>`` for
Llama 3, ``</s>`` for Mistral), so that is where the model learned to stop. It is often not the
tokenizer's ``eos_token``; generation, a merged export's ``generation_config.json`` and a GGUF's
``eot_token_id`` all need it.
"""

from __future__ import annotations

from typing import Any

from trainer.data.chat_masking import ChatTemplateError, end_of_turn_marker


def end_of_turn_id(tokenizer: Any) -> int | None:
    """The id of the token the chat template ends an assistant turn with; None without a usable template."""
    try:
        return tokenizer.convert_tokens_to_ids(end_of_turn_marker(tokenizer))
    except ChatTemplateError:
        return None


def stop_token_ids(tokenizer: Any) -> list[int]:
    """The ids generation stops at: the end-of-turn token first, then ``eos_token_id`` if different."""
    ids = [end_of_turn_id(tokenizer), tokenizer.eos_token_id]
    return list(dict.fromkeys(i for i in ids if i is not None))
