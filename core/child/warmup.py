"""The standby child's side: warm up while the daemon waits, then take the next file.

``python -m core.child.worker --base-dir D --standby FD`` has imported torch, transformers, PEFT and
datasets by the time :func:`serve_standby` runs (``core.child.worker`` imports them at the top). It
then warms the rest of the training path up (:func:`warm_up`), tells the daemon it is ready and waits
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

import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from core.child.agent import set_parent_death_signal
from core.child.protocol import PARENT_PID_ENV, READY, receive_file
from trainer.model.attention import SDPA_PACKED, register_packed_sdpa, transformers_name
from trainer.model.hardware import select_precision
from trainer.model.lora_fold import fold_lora

logger = logging.getLogger(__name__)

WARM_UP_TOKENS = 256  # one padding-free row of two examples


def serve_standby(fd: int) -> list[str]:
    """Warm up, say so on socket ``fd``, and wait for the file; returns the worker's arguments for it.

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
        try:
            warm_up()
        except Exception:  # the imports are done and worth keeping: wait unwarmed rather than not at all
            logger.warning("standby training child %d: the warm-up step failed", os.getpid(), exc_info=True)
        logger.info("standby training child %d ready in %.2f s", os.getpid(), time.perf_counter() - started)
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


def warm_up() -> None:
    """One training step of a tiny Llama with a LoRA adapter, as the real step runs it: the code a
    process runs the first time it trains (lazy imports, autocast, the attention kernel, the fused
    optimizer), meant to take those first-call costs off the file's first step (measured, it did not
    shorten it: docs/performance.md, "Warm training child"). It draws no random numbers from the
    global generators and writes no file, so the file's run starts as in a fresh process."""
    precision = select_precision("auto").value
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    register_packed_sdpa()
    config = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=WARM_UP_TOKENS)
    config._attn_implementation = transformers_name(SDPA_PACKED)
    generator = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        model = LlamaForCausalLM(config).to(dtype if dtype != torch.float16 else torch.float32)
        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                                 target_modules=["q_proj", "v_proj"]))
        fold_lora(model)  # the default lora.dropout 0 trains folded (trainer/model/lora_fold.py)
        model.train()
        half = WARM_UP_TOKENS // 2
        ids = torch.randint(0, config.vocab_size, (1, WARM_UP_TOKENS), generator=generator)
        positions = torch.cat([torch.arange(half), torch.arange(WARM_UP_TOKENS - half)]).unsqueeze(0)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, fused=True)
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            loss = model(input_ids=ids, position_ids=positions, labels=ids).loss
        loss.backward()
        optimizer.step()
