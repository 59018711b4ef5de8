"""Training on several processes: how many, whether the machine allows it, and what they agree on.

The processes are started by torchrun (``core/child/torchrun.py``); inside each, Hugging Face
``Trainer`` (through accelerate) does DDP or FSDP from the ``TrainingArguments`` built here. Before
the process group exists, the rank comes from torchrun's environment (``RANK``, ``WORLD_SIZE``).
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

import torch
import torch.distributed as dist

from trainer.config import TrainConfig
from trainer.config.distributed import DistributedSettings

logger = logging.getLogger(__name__)

RDZV_CONNECT_SECONDS = 3.0


def visible_gpus() -> int:
    """CUDA GPUs this process can see (0 without CUDA)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def processes_per_node(settings: DistributedSettings) -> int:
    """``nproc_per_node`` resolved: ``auto`` is one per visible GPU, 1 on a machine without one."""
    if settings.nproc_per_node == "auto":
        return max(1, visible_gpus())
    return settings.nproc_per_node


def group_size(settings: DistributedSettings) -> int:
    """Processes in the whole group (all machines); above 1 the child runs under torchrun."""
    return processes_per_node(settings) * settings.nnodes


def needs_torchrun(settings: DistributedSettings) -> bool:
    """Whether training runs under torchrun: several processes, or FSDP on any number. FSDP shards
    over a process group, also one of a single GPU; without torchrun's environment accelerate would
    train the model unsharded and write unsharded checkpoints."""
    return group_size(settings) > 1 or settings.strategy == "fsdp"


def world_size() -> int:
    """Processes in this training group, as torchrun told this process (1 when not under torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """True on global rank 0, the one process that writes status, events, results and the model."""
    return int(os.environ.get("RANK", "0")) == 0


def distributed_problems(settings: DistributedSettings) -> list[str]:
    """What this machine cannot run of ``settings``; each problem names its field and says what to do.

    Checked when the config is loaded (at daemon start, by ``trainctl train``/``run``), before any
    file is claimed.
    """
    problems: list[str] = []
    gpus, nproc = visible_gpus(), processes_per_node(settings)
    if gpus == 0 and settings.strategy == "fsdp":
        problems.append(
            "distributed.strategy is \"fsdp\" but PyTorch sees no CUDA GPU here; FSDP needs GPUs. "
            "Use strategy \"ddp\" (or nproc_per_node 1) on this machine"
        )
    if gpus and nproc > gpus:
        problems.append(
            f"distributed.nproc_per_node is {nproc} but this machine has {gpus} visible GPU(s); "
            "use at most that many, or \"auto\""
        )
    if settings.nnodes > 1 and settings.rdzv_endpoint and (problem := rendezvous_problem(settings)):
        problems.append(problem)
    return problems


def rendezvous_problem(settings: DistributedSettings) -> str | None:
    """Whether ``rdzv_endpoint`` can be reached: node 0 hosts it (its name must resolve); the others
    must get a TCP connection to it within :data:`RDZV_CONNECT_SECONDS`."""
    host, _, port = settings.rdzv_endpoint.rpartition(":")
    try:
        if settings.node_rank == 0:
            socket.getaddrinfo(host, int(port))
        else:
            socket.create_connection((host, int(port)), timeout=RDZV_CONNECT_SECONDS).close()
    except OSError as exc:
        role = "does not resolve" if settings.node_rank == 0 else "does not answer"
        return (
            f"distributed.rdzv_endpoint {settings.rdzv_endpoint} {role} ({exc}); start node 0 first and "
            "check the address, the port and the firewall"
        )
    return None


def distributed_training_arguments(config: TrainConfig) -> dict[str, Any]:
    """``TrainingArguments`` for the process group: timeout, backend, and FSDP when chosen.

    Under one process only ``ddp_timeout`` is set (it is unused there). Every trainable parameter gets
    a gradient each step (LoRA adapters, or all weights), so DDP skips its unused-parameter search.
    """
    settings = config.distributed
    kwargs: dict[str, Any] = {
        "ddp_timeout": settings.ddp_timeout_seconds,
        "ddp_find_unused_parameters": False,
    }
    if world_size() > 1 and not torch.cuda.is_available():
        kwargs["ddp_backend"] = "gloo"
    if settings.strategy == "fsdp":
        fsdp = settings.fsdp
        kwargs["fsdp"] = True
        kwargs["fsdp_config"] = {
            "version": 2,
            "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "state_dict_type": fsdp.state_dict_type,
            "cpu_ram_efficient_loading": fsdp.cpu_ram_efficient_loading,
            "reshard_after_forward": fsdp.reshard_after_forward,
            "activation_checkpointing": fsdp.activation_checkpointing,
            "cpu_offload": fsdp.offload_params,
            **({"transformer_layer_cls_to_wrap": fsdp.transformer_layer_cls_to_wrap}
               if fsdp.transformer_layer_cls_to_wrap else {}),
        }
        kwargs["activation_checkpointing"] = False  # FSDP's own is fsdp.activation_checkpointing
    return kwargs


def agree_on_stop(requested: bool, device: torch.device | str) -> bool:
    """True on every rank when a stop was requested on any rank (one all-reduce of the flag).

    Every rank calls this at the same step boundary, so all of them stop after the same step and
    the checkpoint written there is complete. Without a process group the flag is returned as is.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return requested
    flag = torch.tensor([1 if requested else 0], dtype=torch.int32, device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def wait_for_all_ranks() -> None:
    """A barrier across the group (nothing without one): every rank has written its part of a
    checkpoint (its RNG state, its FSDP shards) before rank 0 marks the checkpoint complete."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
