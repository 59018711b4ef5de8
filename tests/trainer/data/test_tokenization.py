"""Tokenization and loss masking: only assistant replies (with their end-of-turn token) are trained."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from profiles import Example, Profile, get_profile
from tests.conftest import chat_rows
from trainer.data.chat_masking import encode_conversation, end_of_turn_marker
from trainer.data.tokenization import IGNORE_INDEX, encode_text, tokenize_examples

END = "<|im_end|>"


class ForcedPromptProfile:
    """A test profile that forces a dated system prompt and changes nothing else."""

    name = "forced_prompt"

    def __init__(self, template: str = "Today is {date}. Answer briefly."):
        self.template = template

    def system_prompt_template(self) -> str | None:
        return self.template

    def transform_example(self, example: Example, index: int) -> Example:
        return example

    def logits_processors(self, tokenizer: Any) -> list[Any]:
        return []

    def validate_example(self, example: Example) -> list[str]:
        return []


def labelled_spans(tokenizer, ids: list[int], labels: list[int]) -> list[str]:
    """The decoded text of each contiguous run of labelled tokens."""
    spans, current = [], []
    for token, label in zip(ids, labels):
        if label != IGNORE_INDEX:
            assert label == token, "a label must be the token at its own position (the model shifts)"
            current.append(token)
        elif current:
            spans.append(tokenizer.decode(current))
            current = []
    if current:
        spans.append(tokenizer.decode(current))
    return spans


def conversation(*turns: tuple[str, str], weights: dict[int, int] | None = None) -> list[dict]:
    messages = [{"role": role, "content": content} for role, content in turns]
    for index, weight in (weights or {}).items():
        messages[index]["weight"] = weight
    return messages


def encode_chat(tokenizer, messages: list[dict]) -> tuple[list[int], list[int]]:
    """Ids and labels of a conversation that the ChatML template renders as one sequence."""
    [piece] = encode_conversation(tokenizer, messages, end_of_turn_marker(tokenizer))
    return piece.input_ids, piece.labels


# --- which tokens are labelled ------------------------------------------------------------------


def test_labels_cover_exactly_the_assistant_turns_with_their_end_token(tiny_tokenizer):
    messages = conversation(
        ("system", "You are a helpful assistant."),
        ("user", "What is the capital of France?"),
        ("assistant", "The capital of France is Paris."),
        ("user", "Thanks!"),
        ("assistant", "Goodbye."),
    )

    ids, labels = encode_chat(tiny_tokenizer, messages)

    assert len(ids) == len(labels)
    assert tiny_tokenizer.decode(ids) == tiny_tokenizer.apply_chat_template(messages, tokenize=False)
    assert labelled_spans(tiny_tokenizer, ids, labels) == [
        f"The capital of France is Paris.{END}",
        f"Goodbye.{END}",
    ]


def test_system_and_user_text_is_never_labelled(tiny_tokenizer):
    messages = conversation(
        ("system", "Translate to German."),
        ("user", "good morning"),
        ("assistant", "Guten Morgen"),
    )

    ids, labels = encode_chat(tiny_tokenizer, messages)

    unlabelled = tiny_tokenizer.decode([t for t, label in zip(ids, labels) if label == IGNORE_INDEX])
    assert unlabelled == (
        "<|im_start|>system\nTranslate to German.<|im_end|>\n"
        "<|im_start|>user\ngood morning<|im_end|>\n"
        "<|im_start|>assistant\n\n"
    )


def test_weight_zero_assistant_turn_is_not_labelled(tiny_tokenizer):
    messages = conversation(
        ("user", "Say something."),
        ("assistant", "Something bad."),
        ("user", "Try again."),
        ("assistant", "Something good."),
        weights={1: 0, 3: 1},
    )

    ids, labels = encode_chat(tiny_tokenizer, messages)

    assert labelled_spans(tiny_tokenizer, ids, labels) == [f"Something good.{END}"]
    assert "Something bad." in tiny_tokenizer.decode(ids)


def test_text_example_labels_every_token_and_ends_with_eos(tiny_tokenizer):
    text = "The quick brown fox jumps over the lazy dog."

    ids, labels = encode_text(tiny_tokenizer, text)

    assert labels == ids
    assert ids[-1] == tiny_tokenizer.eos_token_id
    assert tiny_tokenizer.decode(ids) == text + END


def test_tokenize_examples_counts_trained_tokens(tiny_tokenizer):
    examples = [{"messages": row["messages"]} for row in chat_rows(3)] + [{"text": "Hello! How can I help?"}]

    features, stats = tokenize_examples(examples, tiny_tokenizer, get_profile("default"), max_length=512)

    assert stats.examples == len(features) == 4
    assert stats.length_counts == Counter(len(f["input_ids"]) for f in features)
    assert stats.total_tokens == sum(length * n for length, n in stats.length_counts.items())
    # The first label of an example never trains (nothing predicts it), so it is not counted.
    assert stats.trained_tokens == sum(
        sum(label != IGNORE_INDEX for label in f["labels"][1:]) for f in features
    )
    assert stats.dropped == stats.truncated == stats.no_trained_tokens == 0
    for row, feature in zip(chat_rows(3), features):
        reply = row["messages"][-1]["content"]
        assert labelled_spans(tiny_tokenizer, feature["input_ids"], feature["labels"]) == [reply + END]


# --- over-long examples -------------------------------------------------------------------------


def long_and_short_examples() -> list[Example]:
    long_reply = " ".join(["the quick brown fox jumps over the lazy dog"] * 6)
    return [
        {"messages": conversation(("user", "Hi"), ("assistant", "Hello!"))},
        {"messages": conversation(("user", "Tell me a story."), ("assistant", long_reply))},
        {"messages": conversation(("user", "Bye"), ("assistant", "Goodbye."))},
    ]


@pytest.mark.parametrize("on_overlength", ["truncate", "drop"])
def test_overlength_examples_are_truncated_or_dropped(tiny_tokenizer, on_overlength):
    examples = long_and_short_examples()
    full, _ = tokenize_examples(examples, tiny_tokenizer, get_profile("default"), max_length=4096)
    full_lengths = [len(f["input_ids"]) for f in full]
    max_length = 40
    assert full_lengths[0] < max_length < full_lengths[1] and full_lengths[2] < max_length

    features, stats = tokenize_examples(
        examples, tiny_tokenizer, get_profile("default"), max_length=max_length, on_overlength=on_overlength
    )

    assert stats.length_counts == Counter(full_lengths)  # recorded before truncation
    if on_overlength == "truncate":
        assert (stats.truncated, stats.dropped, stats.examples) == (1, 0, 3)
        assert features[1]["input_ids"] == full[1]["input_ids"][:max_length]
        assert features[1]["labels"] == full[1]["labels"][:max_length]
    else:
        assert (stats.truncated, stats.dropped, stats.examples) == (0, 1, 2)
        assert [f["input_ids"] for f in features] == [full[0]["input_ids"], full[2]["input_ids"]]
    assert all(len(f["input_ids"]) <= max_length for f in features)


def test_example_whose_reply_is_truncated_away_is_left_out(tiny_tokenizer):
    long_question = " ".join(["what is the capital of France"] * 10)
    examples = [
        {"messages": conversation(("user", long_question), ("assistant", "Paris."))},
        {"messages": conversation(("user", "Hi"), ("assistant", "Hello!"))},
    ]
    ids, labels = encode_chat(tiny_tokenizer, examples[0]["messages"])
    first_trained = next(i for i, label in enumerate(labels) if label != IGNORE_INDEX)
    max_length = first_trained - 2
    assert max_length > len(encode_chat(tiny_tokenizer, examples[1]["messages"])[0])

    features, stats = tokenize_examples(
        examples, tiny_tokenizer, get_profile("default"), max_length=max_length
    )

    assert stats.no_trained_tokens == 1
    assert stats.truncated == 1
    assert stats.examples == 1
    assert features[0]["input_ids"] == encode_chat(tiny_tokenizer, examples[1]["messages"])[0]


# --- profile system prompt ----------------------------------------------------------------------


def test_profile_system_prompt_with_date_replaces_the_data_system_message(tiny_tokenizer):
    profile = ForcedPromptProfile()
    assert isinstance(profile, Profile)
    examples = [
        {"messages": conversation(
            ("system", "Data's own system prompt."), ("user", "Hi"), ("assistant", "Hello!")
        )},
        {"messages": conversation(("user", "Bye"), ("assistant", "Goodbye."))},
    ]

    features, _ = tokenize_examples(
        examples, tiny_tokenizer, profile, max_length=512, today=dt.date(2024, 5, 17)
    )

    for feature, reply in zip(features, ["Hello!", "Goodbye."]):
        text = tiny_tokenizer.decode(feature["input_ids"])
        assert text.startswith("<|im_start|>system\nToday is 2024-05-17. Answer briefly.<|im_end|>\n")
        assert text.count("<|im_start|>system") == 1
        assert "Data's own system prompt." not in text
        assert labelled_spans(tiny_tokenizer, feature["input_ids"], feature["labels"]) == [reply + END]


def test_without_profile_prompt_the_data_system_message_is_kept(tiny_tokenizer):
    examples = [{"messages": conversation(("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello!"))}]

    [feature], _ = tokenize_examples(examples, tiny_tokenizer, get_profile("default"), max_length=512)

    assert tiny_tokenizer.decode(feature["input_ids"]).startswith("<|im_start|>system\nBe brief.<|im_end|>")


# --- the loss the model computes ----------------------------------------------------------------


def test_model_loss_is_cross_entropy_over_exactly_the_labelled_positions(tiny_tokenizer, tiny_model_dir):
    rows = chat_rows(4)
    rows[2]["messages"].append({"role": "user", "content": "More?"})
    rows[2]["messages"].append({"role": "assistant", "content": "No more.", "weight": 0})
    rows[2]["messages"].append({"role": "user", "content": "Please?"})
    rows[2]["messages"].append({"role": "assistant", "content": "Fine, the end."})
    features, stats = tokenize_examples(rows, tiny_tokenizer, get_profile("default"), max_length=512)
    width = max(len(f["input_ids"]) for f in features)
    pad = tiny_tokenizer.pad_token_id
    input_ids = torch.tensor([f["input_ids"] + [pad] * (width - len(f["input_ids"])) for f in features])
    labels = torch.tensor([f["labels"] + [IGNORE_INDEX] * (width - len(f["labels"])) for f in features])
    attention_mask = torch.tensor(
        [[1] * len(f["input_ids"]) + [0] * (width - len(f["input_ids"])) for f in features]
    )
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()

    with torch.no_grad():
        out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)

    # Position t predicts token t + 1; only positions whose next token is labelled count.
    logits, targets = out.logits[:, :-1, :], labels[:, 1:]
    selected = targets != IGNORE_INDEX
    manual = F.cross_entropy(logits[selected], targets[selected])
    assert int(selected.sum()) == stats.trained_tokens
    assert torch.allclose(out.loss, manual, atol=1e-5)
    # The mask matters: the loss over every real token is a different number.
    real = attention_mask[:, 1:].bool()
    every_token = F.cross_entropy(logits[real], input_ids[:, 1:][real])
    assert not torch.allclose(out.loss, every_token, atol=1e-3)
