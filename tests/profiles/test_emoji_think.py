"""The emoji_think profile: think stripping, deterministic emoji framing, generation processors."""

from __future__ import annotations

import copy
import re

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessorList

from profiles import get_profile
from profiles.emoji_think import STOP_EMOJIS, THINKING_EMOJIS, strip_think
from tests.profiles.helpers import left_padded

FRAMED = re.compile(
    rf"(?P<think>(?P<t>{'|'.join(THINKING_EMOJIS)})(?P=t)*) (?P<reply>.*) "
    rf"(?P<stop>(?P<s>{'|'.join(STOP_EMOJIS)})(?P=s)*)",
    re.DOTALL,
)


@pytest.fixture()
def profile():
    return get_profile("emoji_think")


def chat(i: int, reply: str | None = None) -> dict:
    """A chat example whose reply hides its reasoning in a think block."""
    reply = reply if reply is not None else f"<think>Let me see, {i}.</think>\n\nAnswer {i}."
    return {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": f"Question {i}?"},
            {"role": "assistant", "content": reply, "weight": 1},
        ]
    }


def is_framed(example: dict) -> bool:
    return FRAMED.fullmatch(example["messages"][-1]["content"]) is not None


def test_system_prompt_template_takes_the_date(profile):
    template = profile.system_prompt_template()
    assert "{date}" in template
    assert "2025-01-31" in template.format(date="2025-01-31")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<think>hm\nok</think>\n\nHello.", "Hello."),
        ("A <think>x</think> B", "A B"),
        ("A\n\n<think>x</think>\n\n<think>y</think>\nB", "A\n\nB"),
        ("Stray </think>tag and <think> open", "Stray tag and open"),
        ("def f():\n    <think>z</think>\n    return 1", "def f():\n    return 1"),
        ("No tags,  kept\n\n\nas is", "No tags,  kept\n\n\nas is"),
    ],
)
def test_strip_think_removes_blocks_and_closes_gaps(text, expected):
    assert strip_think(text) == expected


def test_same_index_gives_identical_output(profile):
    other = get_profile("emoji_think")
    for i in range(50):
        assert profile.transform_example(chat(i), i) == other.transform_example(chat(i), i)


def test_about_half_of_the_examples_are_framed(profile):
    framed = sum(is_framed(profile.transform_example(chat(i), i)) for i in range(200))
    assert 80 <= framed <= 120


def test_framing_follows_the_index_not_the_content(profile):
    for i in range(50):
        assert is_framed(profile.transform_example(chat(0), i)) == is_framed(
            profile.transform_example(chat(i), i)
        )


def test_framed_replies_match_the_user_instruction(profile):
    think_counts, stop_counts, emojis = set(), set(), set()
    for i in range(200):
        out = profile.transform_example(chat(i), i)
        system, user, assistant = out["messages"]
        assert system["content"] == "Be brief."
        match = FRAMED.fullmatch(assistant["content"])
        if match is None:
            assert assistant["content"] == f"Answer {i}."
            assert user["content"] == f"Question {i}?"
            continue
        assert match["reply"] == f"Answer {i}."
        assert user["content"] == (
            f"Question {i}?\n\nBegin your reply with {match['think']} and end it with {match['stop']}."
        )
        think_counts.add(len(match["think"]))
        stop_counts.add(len(match["stop"]))
        emojis |= {match["t"], match["s"]}
    assert min(think_counts) == 2 and max(think_counts) == 8
    assert min(stop_counts) == 2 and max(stop_counts) == 4
    assert emojis == set(THINKING_EMOJIS) | set(STOP_EMOJIS)


def test_transform_returns_a_new_example_and_leaves_the_input_alone(profile):
    for i in range(10):
        example = chat(i)
        before = copy.deepcopy(example)
        out = profile.transform_example(example, i)
        assert example == before
        assert out is not example and out["messages"] is not example["messages"]
        assert out["messages"][-1]["weight"] == 1


def test_only_the_last_reply_and_its_user_turn_are_framed(profile):
    index = next(i for i in range(20) if is_framed(profile.transform_example(chat(i), i)))
    example = {
        "messages": [
            {"role": "user", "content": "First?"},
            {"role": "assistant", "content": "<think>a</think>One."},
            {"role": "user", "content": "Second?"},
            {"role": "assistant", "content": "Two."},
        ]
    }
    first_user, first_reply, user, reply = profile.transform_example(example, index)["messages"]
    assert (first_user["content"], first_reply["content"]) == ("First?", "One.")
    assert user["content"].startswith("Second?\n\nBegin your reply with ")
    assert FRAMED.fullmatch(reply["content"])["reply"] == "Two."


def test_an_empty_reply_is_reported_and_never_framed(profile):
    example = chat(0, reply="<think>only thoughts</think>")
    for i in range(20):
        out = profile.transform_example(example, i)
        assert out["messages"][1]["content"] == "Question 0?"
        assert out["messages"][2]["content"] == ""
    problems = profile.validate_example(example)
    assert len(problems) == 1 and "message 2" in problems[0]
    assert profile.validate_example(chat(0)) == []


def test_text_examples_only_lose_think_tags(profile):
    example = {"text": "<think>hidden</think>Plain text.", "source": "a.jsonl"}
    for i in range(4):
        assert profile.transform_example(example, i) == {"text": "Plain text.", "source": "a.jsonl"}
    assert profile.validate_example(example) == []
    assert profile.validate_example({"text": "<think>x</think>"}) != []


@pytest.mark.parametrize("stop", STOP_EMOJIS)
def test_eos_becomes_the_top_logit_after_a_stop_sequence(profile, tiny_tokenizer, stop):
    eos = tiny_tokenizer.eos_token_id
    texts = [f"Answer. {stop * 2}", f"Answer. {stop * 3}", f"Answer. {stop}", "Answer."]
    input_ids = left_padded(tiny_tokenizer, texts)
    scores = torch.randn(len(texts), len(tiny_tokenizer), generator=torch.Generator().manual_seed(0))
    scores[:, eos] = scores.min() - 1.0

    out = LogitsProcessorList(profile.logits_processors(tiny_tokenizer))(input_ids, scores)

    assert out[:2].argmax(dim=-1).tolist() == [eos, eos]
    assert torch.equal(out[2:], scores[2:])


def test_think_tag_tokens_are_lowered(profile, tiny_tokenizer):
    spelling = tiny_tokenizer.encode("<think>", add_special_tokens=False)
    input_ids = torch.tensor([spelling[:-1]])
    scores = torch.zeros(1, len(tiny_tokenizer))

    out = LogitsProcessorList(profile.logits_processors(tiny_tokenizer))(input_ids, scores)

    assert out[0, spelling[-1]] < 0
    assert out[0].max() == 0


def test_generation_ends_right_after_a_stop_sequence(profile, tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hello?"}], tokenize=False, add_generation_prompt=True
    )
    batch = tokenizer([prompt + "Hi " + "🏁" * 2, prompt + "Hi"], return_tensors="pt", padding=True)
    settings = {"max_new_tokens": 4, "do_sample": False, "pad_token_id": tokenizer.pad_token_id}

    plain = model.generate(**batch, **settings)
    shaped = model.generate(
        **batch,
        logits_processor=LogitsProcessorList(profile.logits_processors(tokenizer)),
        **settings,
    )

    width = batch["input_ids"].shape[1]
    assert plain[0, width] != tokenizer.eos_token_id
    assert shaped[0, width] == tokenizer.eos_token_id
    assert torch.equal(shaped[1], plain[1])
