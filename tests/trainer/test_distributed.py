"""The ``distributed`` section: what the schema refuses, what this machine refuses, what HF gets."""

from __future__ import annotations

import socket

import pytest
import torch
from transformers import TrainingArguments

from trainer.checkpoints.resume import ResumeError, check_world_size
from trainer.config import ConfigError, TrainConfig, parse_config
from trainer.distributed import (
    agree_on_stop,
    distributed_problems,
    distributed_training_arguments,
    group_size,
    processes_per_node,
)

NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="checks what a machine without a GPU refuses")


def _config(**distributed) -> TrainConfig:
    return parse_config({"distributed": distributed}, "config.json")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # free once closed: nothing answers there


@pytest.mark.parametrize(
    ("distributed", "field"),
    [
        ({"nproc_per_node": 0}, "distributed.nproc_per_node"),
        ({"strategy": "zero3"}, "distributed.strategy"),
        ({"nnodes": 2}, "distributed.rdzv_endpoint"),
        ({"nnodes": 2, "node_rank": 2, "rdzv_endpoint": "10.0.0.1:29400"}, "distributed.node_rank"),
        ({"nnodes": 2, "rdzv_endpoint": "10.0.0.1"}, "distributed.rdzv_endpoint"),
        ({"fsdp": {"state_dict": "FULL"}}, "state_dict"),
    ],
)
def test_the_schema_refuses_bad_settings_naming_the_field(distributed, field):
    with pytest.raises(ConfigError) as caught:
        _config(**distributed)
    assert field in str(caught.value)


def test_defaults_are_one_process_and_auto_is_one_process_per_gpu_or_one():
    assert group_size(TrainConfig().distributed) == 1
    auto = _config(nproc_per_node="auto").distributed
    assert processes_per_node(auto) == max(1, torch.cuda.device_count())
    assert group_size(_config(nproc_per_node=2, nnodes=3, rdzv_endpoint="h:1").distributed) == 6


@NO_GPU
def test_without_a_gpu_ddp_on_several_processes_is_allowed_and_fsdp_is_refused():
    assert distributed_problems(_config(nproc_per_node=2).distributed) == []
    [problem] = distributed_problems(_config(nproc_per_node=2, strategy="fsdp").distributed)
    assert "distributed.strategy" in problem and "no CUDA GPU" in problem


def test_a_rendezvous_endpoint_that_does_not_answer_is_named():
    settings = _config(nnodes=2, node_rank=1, rdzv_endpoint=f"127.0.0.1:{_closed_port()}").distributed
    [problem] = distributed_problems(settings)
    assert "distributed.rdzv_endpoint" in problem and "does not answer" in problem


def test_a_rendezvous_endpoint_that_answers_passes():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        settings = _config(nnodes=2, node_rank=1, rdzv_endpoint=f"127.0.0.1:{server.getsockname()[1]}").distributed
        assert distributed_problems(settings) == []


def test_fsdp_maps_onto_fsdp2_with_transformer_wrap_and_sharded_state():
    config = _config(strategy="fsdp", fsdp={"transformer_layer_cls_to_wrap": ["LlamaDecoderLayer"]})
    kwargs = distributed_training_arguments(config)
    assert kwargs["fsdp"] is True and kwargs["activation_checkpointing"] is False
    assert kwargs["fsdp_config"] == {
        "version": 2, "auto_wrap_policy": "TRANSFORMER_BASED_WRAP", "state_dict_type": "SHARDED_STATE_DICT",
        "cpu_ram_efficient_loading": True, "reshard_after_forward": True, "activation_checkpointing": False,
        "cpu_offload": False, "transformer_layer_cls_to_wrap": ["LlamaDecoderLayer"],
    }
    assert kwargs["ddp_timeout"] == 7200 > TrainingArguments(output_dir="x").ddp_timeout


def test_ddp_sets_no_fsdp_and_a_raised_timeout():
    kwargs = distributed_training_arguments(_config(nproc_per_node=2))
    assert "fsdp" not in kwargs and kwargs["ddp_timeout"] == 7200
    args = TrainingArguments(output_dir="x", use_cpu=True, report_to=[], **kwargs)
    assert args.ddp_timeout == 7200 and not args.fsdp


def test_without_a_process_group_the_stop_flag_is_this_process_own():
    assert agree_on_stop(True, "cpu") is True and agree_on_stop(False, "cpu") is False


def test_fsdp_shards_resume_only_on_as_many_processes_as_wrote_them(tmp_path):
    checkpoint = tmp_path / "checkpoint-4"
    (checkpoint / "pytorch_model_fsdp_0").mkdir(parents=True)
    for rank in range(2):
        (checkpoint / f"rng_state_{rank}.pth").write_bytes(b"x")
    check_world_size(checkpoint, 2)
    with pytest.raises(ResumeError, match="written by 2 processes and this run has 4"):
        check_world_size(checkpoint, 4)


def test_ddp_checkpoints_resume_on_any_number_of_processes(tmp_path):
    checkpoint = tmp_path / "checkpoint-4"
    checkpoint.mkdir()
    for rank in range(2):
        (checkpoint / f"rng_state_{rank}.pth").write_bytes(b"x")
    check_world_size(checkpoint, 1)
    check_world_size(checkpoint, 3)

