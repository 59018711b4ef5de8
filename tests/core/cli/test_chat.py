"""``trainctl chat``: one reply for --prompt, or a conversation on stdin, from a LoRA snapshot."""

from __future__ import annotations

import datetime as dt
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from core.cli import main
from core.snapshots.store import SnapshotStore, build_manifest
from core.state.layout import BaseDir, init_base_dir
from profiles import get_profile
from tests.tiny_models import build_tiny_adapter_dir
from trainer.config import TrainConfig
from trainer.inference.chat import ChatSession, GenerationSettings
from trainer.inference.loading import load_trained


@pytest.fixture(scope="module")
def adapter(tiny_model_dir, tmp_path_factory) -> Path:
    return build_tiny_adapter_dir(tiny_model_dir, tmp_path_factory.mktemp("adapter") / "adapter", seed=4)


@pytest.fixture()
def base(tmp_path, tiny_config, adapter) -> BaseDir:
    base = init_base_dir(tmp_path / "base")
    base.config_file.write_text(json.dumps(tiny_config))
    store = SnapshotStore(base)
    manifest = build_manifest(source_file="a.jsonl", sha256="0" * 64, rows=8, steps=2, first_loss=2.0,
                              last_loss=1.0, eval_loss=None, config=TrainConfig.model_validate(tiny_config),
                              base_model=tiny_config["base_model"], profile="default", parent_snapshot=None)
    store.promote(store.create(Path(shutil.copytree(adapter, tmp_path / "run")), manifest, "a").id)
    return base


def _greedy_reply(adapter: Path, base_model: str, messages: list[dict], tokens: int) -> str:
    """The reply computed here, independently of the chat code: template, adapter, greedy decoding."""
    loaded = load_trained(adapter, base_model)
    tokenizer = loaded.tokenizer
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    with torch.inference_mode():
        out = loaded.model.generate(**ids, max_new_tokens=tokens, do_sample=False, eos_token_id=end, pad_token_id=end)
    return tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def test_chat_prompt_prints_the_snapshots_reply(base, adapter, tiny_config, capsys):
    assert main(["chat", "current", "--prompt", "What is the capital of France?", "--max-new-tokens", "12",
                 "--base-dir", str(base.root)]) == 0

    out, err = capsys.readouterr()
    snapshot = SnapshotStore(base).current().id
    assert f"chat: snapshot {snapshot} (LoRA adapter on {tiny_config['base_model']}" in err
    expected = _greedy_reply(adapter, tiny_config["base_model"],
                             [{"role": "user", "content": "What is the capital of France?"}], 12)
    assert expected and out.strip() == expected


def test_interactive_chat_keeps_history_until_reset(base, adapter, tiny_config, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("hello\nhow are you?\n/reset\nhow are you?\n/exit\nignored\n"))
    assert main(["chat", "--max-new-tokens", "6", "--base-dir", str(base.root)]) == 0

    out, err = capsys.readouterr()
    replies = [line.strip() for line in out.replace("you> ", "").strip().splitlines()]
    first = _greedy_reply(adapter, tiny_config["base_model"], [{"role": "user", "content": "hello"}], 6)
    with_history = _greedy_reply(adapter, tiny_config["base_model"], [
        {"role": "user", "content": "hello"}, {"role": "assistant", "content": first},
        {"role": "user", "content": "how are you?"}], 6)
    fresh = _greedy_reply(adapter, tiny_config["base_model"], [{"role": "user", "content": "how are you?"}], 6)
    assert replies == [first, with_history, fresh]
    assert "(conversation cleared)" in err


def test_chat_uses_the_profiles_dated_system_prompt_and_streams_pieces(adapter, tiny_model_dir):
    loaded = load_trained(adapter, str(tiny_model_dir))
    session = ChatSession(loaded.model, loaded.tokenizer, get_profile("emoji_think"))
    system = session.messages("hi")[0]
    assert system["role"] == "system" and dt.date.today().isoformat() in system["content"]
    assert ChatSession(loaded.model, loaded.tokenizer, get_profile("emoji_think"), system="Be brief.").messages(
        "hi")[0] == {"role": "system", "content": "Be brief."}

    session = ChatSession(loaded.model, loaded.tokenizer, get_profile("default"))
    pieces: list[str] = []
    reply = session.reply("how are you?", GenerationSettings(max_new_tokens=8), on_text=pieces.append)
    assert len(pieces) > 1 and "".join(pieces).strip() == reply  # streamed word by word (TextStreamer)
    assert session.messages("again") == [
        {"role": "user", "content": "how are you?"}, {"role": "assistant", "content": reply}, {"role": "user", "content": "again"}]
    session.reset()
    assert session.messages("again") == [{"role": "user", "content": "again"}]


def test_chat_runs_on_the_threads_asked_for_and_gives_the_process_its_threads_back(base, capsys):
    before = torch.get_num_threads()
    assert main(["chat", "--prompt", "hi", "--max-new-tokens", "2", "--threads", "1", "--base-dir", str(base.root)]) == 0
    assert "1 CPU thread(s)" in capsys.readouterr().err
    assert torch.get_num_threads() == before


def test_chat_loads_no_training_libraries(base):
    """A reply needs torch, transformers and PEFT; not the dataset, trainer or TRL side (seconds on CPU)."""
    probe = ("import sys\nfrom core.cli import main\n"
             "code = main(sys.argv[1:])\n"
             "print(code, [name for name in ('datasets', 'trl', 'trainer.builders', 'trainer.model.loading', 'core.train')"
             " if name in sys.modules])")
    done = subprocess.run([sys.executable, "-c", probe, "chat", "--prompt", "hi", "--max-new-tokens", "2",
                           "--base-dir", str(base.root)], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "0 []"


def test_chat_on_an_unknown_snapshot_is_a_clear_error(base, capsys):
    assert main(["chat", "nosuch", "--prompt", "hi", "--base-dir", str(base.root)]) == 2
    assert "no snapshot 'nosuch'" in capsys.readouterr().err
