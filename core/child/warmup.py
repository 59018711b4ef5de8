"""The standby child's side: warm up while the daemon waits, then take the next file.

``python -m core.child.worker --base-dir D --standby FD`` has imported torch, transformers, PEFT and
datasets by the time :func:`serve_standby` runs (``core.child.worker`` imports them at the top). It
then warms the rest of the training path up (:func:`warm_up`: one step of one layer of the configured
model, on the GPU where there is one), tells the daemon it is ready and waits
for its file (``core.child.protocol.receive_file``). Once it has the file it is the training child a
cold start would have been: its output goes to the file's log, it holds the work folder's lock, and
``core.child.worker`` runs the same code on the same arguments.

Until a file comes it holds nothing: it dies with the daemon (SIGKILL when the daemon dies, the end of
the socket when the daemon closes it) and SIGTERM ends it at once. The worker asks for SIGTERM on the
daemon's death again as it starts training, as a cold child does.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import sys
import time
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from core.child.agent import set_parent_death_signal
from core.child.protocol import PARENT_PID_ENV, READY, receive_file
from core.state.layout import BaseDir
from trainer.builders import build_lora_config
from trainer.config import load_config
from trainer.model.attention import SDPA_PACKED, register_packed_sdpa, transformers_name
from trainer.model.hardware import autocast_dtype, select_attention, select_precision
from trainer.model.loading import load_model_config, weights_dtype
from trainer.model.lora_fold import fold_lora

logger = logging.getLogger(__name__)

WARM_UP_TOKENS = 256  # one padding-free row of two examples


def serve_standby(fd: int, base_dir: Path) -> list[str]:
    """Warm up for ``base_dir``'s model, say so on socket ``fd``, and wait for the file; returns the
    worker's arguments for it.

    From the return on, stdout and stderr are the file's log and the work folder's lock is held.

    Raises:
        SystemExit: the daemon exited or closed the socket before handing a file over.
    """
    set_parent_death_signal(signal.SIGKILL)  # nothing to save yet: go with the daemon
    expected = os.environ.get(PARENT_PID_ENV)
    if expected and os.getppid() != int(expected):
        raise SystemExit(f"the daemon (pid {expected}) exited before this standby child was ready")
    sock = socket.socket(fileno=fd)
    if not select.select([sock], [], [], 0)[0]:  # a file already waiting is trained at once
        started = time.perf_counter()
        what = "nothing"
        try:
            what = warm_up(base_dir)
        except Exception:  # the imports are done and worth keeping: wait unwarmed rather than not at all
            logger.warning("standby training child %d: the warm-up step failed", os.getpid(), exc_info=True)
        logger.info("standby training child %d ready in %.2f s (warmed up: %s)", os.getpid(),
                    time.perf_counter() - started, what)
        try:
            sock.send(READY)
        except OSError:
            raise SystemExit(0) from None  # the daemon is gone
    request = receive_file(sock)
    sock.close()
    if request is None:
        raise SystemExit(0)
    args, _lock_fd, log_fd = request  # the lock stays open, and held, until this process exits
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(log_fd, sys.stdout.fileno())
    os.dup2(log_fd, sys.stderr.fileno())
    os.close(log_fd)
    return args


def warm_up(base_dir: Path | None = None) -> str:
    """One training step as the next file's first step will run it, on a model of one decoder layer.

    The layer has the configured model's shapes (hidden size, heads, vocabulary: its transformers
    config, read from ``base_dir``'s current or base model), its precision, attention kernel, LoRA
    targets and fold, and runs on the device training will use: the GPU where there is one, so that
    the CUDA context, cuBLAS and the attention kernels are up before the file comes. A base dir
    whose model cannot be read yet (a hub id not downloaded, no model at all) falls back to a
    64-wide Llama. It draws no random numbers from the global generators, writes no file,
    and frees what it allocated. Returns what it warmed up, for the log.
    """
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    with torch.random.fork_rng(devices=[device.index] if device.type == "cuda" else []):
        model = None
        if base_dir is not None:
            try:
                model, precision, what = _configured_layer(base_dir, device)
            except Exception as exc:  # noqa: BLE001 - any failure here only costs the warm-up its shapes
                logger.info("standby training child: the configured model's shapes are not available (%s)", exc)
        if model is None:
            model, precision, what = _tiny_llama(device)
        _train_one_step(model, precision, device)
    del model
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()  # the file's own run gets the whole GPU
    return f"{what} on {device.type}"


def _configured_layer(base_dir: Path, device: torch.device) -> tuple[torch.nn.Module, str, str]:
    """One decoder layer of the model the next file trains, as ``UltimateTrainer.setup`` would load it."""
    from transformers import AutoModelForCausalLM

    layout = BaseDir.at(base_dir)
    config = load_config(layout.config_file)
    hp = config.hyperparams
    model_config = load_model_config(layout.model_source(config), config, layout.root)
    precision = select_precision(hp.fp_precision).value
    attention = select_attention(hp.attn_implementation, precision, hp.padding_free, model_config).value
    if attention == SDPA_PACKED:
        register_packed_sdpa()
    if getattr(model_config, "num_hidden_layers", None) is None:  # e.g. a vision-language config
        raise ValueError(f"{model_config.model_type} does not say how many decoder layers it has")
    model_config.num_hidden_layers = 1
    if isinstance(getattr(model_config, "layer_types", None), list):
        model_config.layer_types = model_config.layer_types[:1]
    with device:
        model = AutoModelForCausalLM.from_config(
            model_config, dtype=weights_dtype(config, precision), attn_implementation=transformers_name(attention),
            trust_remote_code=config.trust_remote_code,
        )
    if config.adapter:
        model = get_peft_model(model, build_lora_config(config))
        fold_lora(model)  # folds only with lora.dropout 0, as training does (trainer/model/lora_fold.py)
    else:  # full fine-tuning: the layer trains, but no optimizer state for a vocabulary of 100k+ rows
        for embedding in (model.get_input_embeddings(), model.get_output_embeddings()):
            if embedding is not None:
                embedding.requires_grad_(False)
    what = (f"one {model_config.model_type} layer (hidden {model_config.hidden_size}, vocabulary "
            f"{model_config.vocab_size}, {precision}, {attention}, {config.method})")
    return model, precision, what


def _tiny_llama(device: torch.device) -> tuple[torch.nn.Module, str, str]:
    """A 64-wide two-layer Llama with a LoRA adapter: the code paths, when the configured shapes are unknown."""
    precision = select_precision("auto").value
    register_packed_sdpa()
    config = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=WARM_UP_TOKENS)
    config._attn_implementation = transformers_name(SDPA_PACKED)
    model = LlamaForCausalLM(config).to(device, torch.bfloat16 if precision == "bf16" else torch.float32)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"]))
    fold_lora(model)
    return model, precision, "a tiny Llama"


def _train_one_step(model: torch.nn.Module, precision: str, device: torch.device) -> None:
    """Forward, backward and a fused AdamW step on one padding-free row of two examples."""
    dtype = autocast_dtype(precision)
    model.train()
    half = WARM_UP_TOKENS // 2
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (1, WARM_UP_TOKENS), generator=generator).to(device)
    positions = torch.cat([torch.arange(half), torch.arange(WARM_UP_TOKENS - half)]).unsqueeze(0).to(device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, fused=True)
    with torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        loss = model(input_ids=ids, position_ids=positions, labels=ids).loss
    loss.backward()
    optimizer.step()
