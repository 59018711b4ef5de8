"""The tokenization cache key changes with any code that shapes the tokens, not only the profile's class."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from profiles import get_profile
from tests.conftest import chat_rows, write_jsonl
from trainer.config import TrainConfig
from trainer.data.dataset import cache_key, token_code_sources

PROFILE_MODULE = '''
def shorten(text):
    return text[:{limit}]


class ShortProfile:
    name = "short"

    def system_prompt_template(self):
        return None

    def transform_example(self, example, index):
        return {{"messages": [dict(m, content=shorten(m["content"])) for m in example["messages"]]}}

    def logits_processors(self, tokenizer):
        return []

    def validate_example(self, example):
        return []
'''


def _load_profile(path: Path, monkeypatch):
    spec = importlib.util.spec_from_file_location("short_profile", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "short_profile", module)
    spec.loader.exec_module(module)
    return module.ShortProfile()


def test_a_change_to_a_helper_next_to_the_profile_class_changes_the_key(tmp_path, tiny_tokenizer, monkeypatch):
    data_file = write_jsonl(tmp_path / "chat.jsonl", chat_rows(3))
    source = tmp_path / "short_profile.py"
    source.write_text(PROFILE_MODULE.format(limit=20))
    before = cache_key(data_file, tiny_tokenizer, _load_profile(source, monkeypatch), TrainConfig())

    source.write_text(PROFILE_MODULE.format(limit=200))  # the class itself is unchanged
    after = cache_key(data_file, tiny_tokenizer, _load_profile(source, monkeypatch), TrainConfig())

    assert after != before


def test_the_key_covers_the_data_modules_and_the_profiles_modules_the_profile_uses(tmp_path, monkeypatch):
    source = tmp_path / "short_profile.py"
    source.write_text("from profiles.emoji_think import strip_think\n" + PROFILE_MODULE.format(limit=20))

    sources = token_code_sources(_load_profile(source, monkeypatch))

    assert {"trainer.data.formats", "trainer.data.tokenization", "trainer.data.chat_masking",
            "trainer.data.file_pass", "short_profile"} <= set(sources)
    assert "profiles.emoji_think" in sources  # a shared transform from another profiles module
    assert "transformers" in sources["versions"]
    # emoji_think's generation-time processors shape no token, and are imported only to generate
    assert "profiles.processors" not in token_code_sources(get_profile("emoji_think"))
