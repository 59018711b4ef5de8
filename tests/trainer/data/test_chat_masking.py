"""Assistant-only labels on the chat templates of each model family: each trained reply and its end-of-turn
token are labelled, nothing else, whether the template renders conversations prefix by prefix or not."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from profiles import get_profile
from tests.conftest import write_jsonl
from tests.trainer.data.chat_templates import FAMILIES, NO_END_MARKER, family_tokenizer
from trainer.config import TrainConfig
from trainer.data.chat_masking import reply_labels
from trainer.data.dataset import build_train_data
from trainer.data.tokenization import IGNORE_INDEX, ChatTemplateError, tokenize_examples
from trainer.data.validation import validate_file

PREFIX_STABLE = {"llama3", "qwen2.5", "gemma3", "gemma2"}
"""Families whose template renders a conversation as one sequence; the others get one per trained reply."""


def labelled_runs(tokenizer, feature: dict) -> list[str]:
    """The decoded text of each contiguous run of labelled tokens."""
    runs, current = [], []
    for token, label in zip(feature["input_ids"], feature["labels"]):
        if label != IGNORE_INDEX:
            assert label == token
            current.append(token)
        elif current:
            runs.append(tokenizer.decode(current))
            current = []
    return runs + ([tokenizer.decode(current)] if current else [])


def rendered_reply(family: str, content: str) -> str:
    """How the family's template writes a reply that ends the conversation, end-of-turn token included."""
    if family == "qwen3":
        content = f"<think>\n\n</think>\n\n{content}"
    return content + FAMILIES[family].end_of_turn


def tokenize(family: str, conversations: list[list[dict]], template: str | None = None):
    examples = [{"messages": messages, "_line": line} for line, messages in enumerate(conversations, 1)]
    tokenizer = family_tokenizer(family, template)
    features, stats = tokenize_examples(examples, tokenizer, get_profile("default"), max_length=4096)
    return tokenizer, features, stats


def chat(family: str) -> list[dict]:
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "The capital of France is Paris."},
        {"role": "user", "content": "And the fox?"},
        {"role": "assistant", "content": "The fox is quick.", "weight": 0},
        {"role": "user", "content": "Thanks!"},
        {"role": "assistant", "content": "Answer the question briefly."},
    ]
    return messages if FAMILIES[family].system_role else messages[1:]


@pytest.mark.parametrize("family", FAMILIES)
def test_exactly_the_trained_replies_and_their_end_of_turn_token_are_labelled(family):
    tokenizer, features, stats = tokenize(family, [chat(family)])

    runs = [run for feature in features for run in labelled_runs(tokenizer, feature)]

    expected = [rendered_reply(family, "The capital of France is Paris."),
                rendered_reply(family, "Answer the question briefly.")]
    assert [run.lstrip() for run in runs] == expected  # Mistral's reply token carries the space before it
    assert len(features) == (1 if family in PREFIX_STABLE else 2)
    assert stats.per_turn_conversations == (0 if family in PREFIX_STABLE else 1)
    assert (stats.trained_rows, stats.examples) == (1, len(features))


@pytest.mark.parametrize("family", FAMILIES)
def test_every_sequence_is_the_templates_own_rendering(family):
    tokenizer, features, _ = tokenize(family, [chat(family)])
    messages = chat(family)
    trained = [i for i, m in enumerate(messages) if m["role"] == "assistant" and m.get("weight", 1)]
    cuts = [messages] if family in PREFIX_STABLE else [messages[: i + 1] for i in trained]

    plain = [[{"role": m["role"], "content": m["content"]} for m in cut] for cut in cuts]
    assert [tokenizer.decode(f["input_ids"]) for f in features] == [
        tokenizer.apply_chat_template(cut, tokenize=False) for cut in plain
    ]


def test_qwen3_trains_each_reply_with_its_reasoning_as_the_template_shows_it_last():
    conversation = [
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "<think>\nThe capital.\n</think>\n\nParis."},
        {"role": "user", "content": "And the fox?"},
        {"role": "assistant", "content": "<think>\nquick brown\n</think>\n\nThe fox is quick."},
    ]
    tokenizer, features, _ = tokenize("qwen3", [conversation])

    assert [labelled_runs(tokenizer, f) for f in features] == [
        ["<think>\nThe capital.\n</think>\n\nParis.<|im_end|>"],
        ["<think>\nquick brown\n</think>\n\nThe fox is quick.<|im_end|>"],
    ]
    second = tokenizer.decode(features[1]["input_ids"])
    assert "Paris." in second and "The capital." not in second  # earlier reasoning dropped, as Qwen3 does


@pytest.mark.parametrize("family", ["mistral-v0.3", "mistral-v0.3-loop-last"])
def test_mistral_replies_are_found_wherever_the_system_prompt_moves(family):
    tokenizer, features, _ = tokenize(family, [chat(family)])

    texts = [tokenizer.decode(f["input_ids"]) for f in features]

    if family == "mistral-v0.3":  # merged into the last user turn before each trained reply
        assert "[INST] You are a helpful assistant.\n\nWhat is the capital" in texts[0]
        assert "[INST] You are a helpful assistant.\n\nThanks![/INST]" in texts[1]
    else:  # only a conversation that ends with a user turn gets it: none of the training sequences
        assert all("helpful assistant" not in text for text in texts)
    assert [run.lstrip() for f in features for run in labelled_runs(tokenizer, f)] == [
        "The capital of France is Paris.</s>", "Answer the question briefly.</s>",
    ]


def test_a_template_without_an_end_of_turn_token_is_refused():
    with pytest.raises(ChatTemplateError, match="never learn to stop.*eos_token"):
        tokenize("qwen2.5", [chat("qwen2.5")], template=NO_END_MARKER)


def test_a_template_that_refuses_a_conversation_names_the_line():
    with pytest.raises(ChatTemplateError, match="line 1: the model's chat template refused.*System role"):
        tokenize("gemma2", [chat("qwen2.5")])


def _without_template(family: str):
    tokenizer = family_tokenizer(family)
    bare = tokenizer.__class__(tokenizer_object=tokenizer.backend_tokenizer, eos_token=tokenizer.eos_token)
    assert not bare.chat_template
    return bare


def test_chat_rows_with_a_tokenizer_without_chat_template_fail_naming_the_file(tmp_path: Path):
    data_file = write_jsonl(tmp_path / "chats.jsonl", [{"messages": chat("qwen2.5")}])

    with pytest.raises(ChatTemplateError, match=r"chats\.jsonl: the model's tokenizer has no chat template"):
        build_train_data(data_file, _without_template("qwen2.5"), get_profile("default"), TrainConfig(), None)
    report = validate_file(data_file, TrainConfig(), _without_template("qwen2.5"), get_profile("default"))
    assert not report.usable and report.problems[0].startswith("chats.jsonl: the model's tokenizer has no chat")


def test_text_rows_need_no_chat_template(tmp_path: Path):
    data_file = write_jsonl(tmp_path / "text.jsonl", [{"text": "The quick brown fox."}])

    data = build_train_data(data_file, _without_template("qwen2.5"), get_profile("default"), TrainConfig(), None)

    assert data.stats.examples == 1


@pytest.mark.parametrize("seed", range(200))
def testreply_labels_by_bisection_match_the_token_by_token_rule(seed):
    rng = random.Random(seed)
    offsets, position = [], 0
    for _ in range(rng.randint(0, 40)):  # text order, with empty tokens and gaps between tokens
        start = position + rng.choice((0, 0, 1))
        position = start + rng.choice((0, 1, 2, 3, 5))
        offsets.append((start, position))
    if seed % 5 == 0 and len(offsets) > 2:  # not in text order: checked token by token
        offsets[1], offsets[-1] = offsets[-1], offsets[1]
    ids = [1000 + k for k in range(len(offsets))]
    edges = sorted(rng.sample(range(position + 3), min(position + 3, 2 * rng.randint(0, 3))))
    spans = list(zip(edges[::2], edges[1::2]))

    expected = [token if any(start < hi and end > lo for lo, hi in spans) else IGNORE_INDEX
                for token, (start, end) in zip(ids, offsets)]

    assert reply_labels(ids, offsets, spans) == expected
