"""The ``distributed`` section of config.json: how many training processes, and how they share the model.

One process is the default. More processes run the training child under torchrun, with Hugging Face
``Trainer`` doing DDP (a full copy of the model per process, gradients averaged) or FSDP (parameters,
gradients and optimizer state sharded across the processes). See docs/distributed.md.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from trainer.config.schema_base import StrictModel


class FsdpSettings(StrictModel):
    """FSDP settings, mapped onto ``TrainingArguments.fsdp_config`` (FSDP2). Used when ``strategy`` is ``fsdp``."""

    transformer_layer_cls_to_wrap: list[str] | None = None
    """Decoder-layer class names that each become one FSDP unit (e.g. ``["LlamaDecoderLayer"]``).
    None: the model's own ``_no_split_modules``, as accelerate reads them."""

    state_dict_type: Literal["SHARDED_STATE_DICT", "FULL_STATE_DICT"] = "SHARDED_STATE_DICT"
    """How checkpoints are written. ``SHARDED_STATE_DICT``: each process writes its shard (fast, little
    memory; resumable only with the same number of processes). ``FULL_STATE_DICT``: gathered on rank 0."""

    cpu_ram_efficient_loading: bool = True
    """Load the weights on rank 0 only and broadcast them, instead of one full copy in CPU memory per
    process (needed for 7B+ models on machines with less RAM than processes x model size)."""

    reshard_after_forward: bool = True
    """Free the gathered parameters after each layer's forward (ZeRO-3 like, least memory); False keeps
    them until the backward pass (ZeRO-2 like, less communication)."""

    activation_checkpointing: bool = False
    """FSDP's own activation checkpointing, instead of ``hyperparams.use_gradient_checkpointing`` (which
    is turned off under FSDP because it adds an all-gather to every backward pass)."""

    offload_params: bool = False
    """Keep parameters and optimizer state in CPU memory between uses: fits larger models, much slower."""


class DistributedSettings(StrictModel):
    """Training on several processes (GPUs, or machines) through torchrun. One process by default."""

    nproc_per_node: int | Literal["auto"] = 1
    """Training processes on this machine. ``auto``: one per visible GPU (1 on a machine without one).
    Above 1 the training child runs under torchrun. Without a GPU, more than 1 is allowed only with
    ``strategy: ddp`` (gloo backend on CPU: for tests, not for speed)."""

    strategy: Literal["ddp", "fsdp"] = "ddp"
    """``ddp``: every process holds the whole model, gradients are averaged (use when the model,
    its gradients and optimizer state fit on one GPU, e.g. LoRA). ``fsdp``: they are sharded across the
    processes (use for a full fine-tune that does not fit one GPU). FSDP needs CUDA GPUs, and runs under
    torchrun also with one process (it shards over a process group)."""

    nnodes: int = Field(1, ge=1)
    """Machines taking part. Above 1 each machine runs ``trainctl train`` on the same file with the
    same config except ``node_rank``; ``rdzv_endpoint`` must then be set."""

    node_rank: int = Field(0, ge=0)
    """This machine's index, 0 to ``nnodes - 1``. Rank 0 writes the model, checkpoints and results."""

    rdzv_endpoint: str | None = None
    """``host:port`` where the machines meet (torchrun's c10d rendezvous), normally node 0's address and
    a free port, e.g. ``10.0.0.1:29400``. Needed when ``nnodes`` is above 1."""

    rdzv_id: str = Field("trainctl", min_length=1)
    """Name of the job at the rendezvous; every machine of one run uses the same."""

    ddp_timeout_seconds: int = Field(7200, ge=60)
    """How long a process waits for the others at a collective (``TrainingArguments.ddp_timeout``). Raised
    from HF's 1800 s so that rank 0 tokenizing a large file cannot time the group out."""

    fsdp: FsdpSettings = Field(default_factory=FsdpSettings)
    """FSDP settings (``strategy: fsdp`` only)."""

    @model_validator(mode="after")
    def _check_nodes(self) -> DistributedSettings:
        if isinstance(self.nproc_per_node, int) and self.nproc_per_node < 1:
            raise ValueError(f"distributed.nproc_per_node is {self.nproc_per_node}; use 1 or more, or \"auto\"")
        if self.node_rank >= self.nnodes:
            raise ValueError(
                f"distributed.node_rank ({self.node_rank}) must be below distributed.nnodes ({self.nnodes}); "
                "number the machines 0 to nnodes - 1"
            )
        if self.nnodes > 1 and not self.rdzv_endpoint:
            raise ValueError(
                f"distributed.rdzv_endpoint is needed with distributed.nnodes {self.nnodes}; set it to "
                "host:port of node 0 (e.g. \"10.0.0.1:29400\")"
            )
        if self.rdzv_endpoint is not None and not _host_port(self.rdzv_endpoint):
            raise ValueError(
                f"distributed.rdzv_endpoint {self.rdzv_endpoint!r} is not host:port; write it like \"10.0.0.1:29400\""
            )
        return self


def _host_port(endpoint: str) -> bool:
    host, _, port = endpoint.rpartition(":")
    return bool(host) and port.isdigit() and 0 < int(port) < 65536
