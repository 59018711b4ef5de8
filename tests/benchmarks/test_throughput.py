"""The throughput harness: tuned peers beside ours, a model built from a shape, MFU against a given
peak, and a clear word when TRL or a GPU is missing. The speeds themselves are never asserted."""

from __future__ import annotations

import json

import pytest

from benchmarks import contenders, throughput


def test_a_shape_model_runs_ours_beside_a_tuned_peer_with_mfu_against_the_given_peak(
    tmp_path, capsys, tiny_model_dir
):
    out = tmp_path / "result.json"

    report = throughput.main([  # the fixture's tokenizer: a fresh clone has no embedded model prepared
        "--shape", "tiny", "--tokenizer", str(tiny_model_dir), "--steps", "2", "--batch-size", "2",
        "--only", "ours", "hf_tuned",
        "--peak-tflops", "1", "--out", str(out),
    ])

    assert json.loads(out.read_text())["results"].keys() == {"ours", "hf_tuned"}
    ours, peer = report["results"]["ours"], report["results"]["hf_tuned"]
    assert report["params"] < 5_000_000  # the tiny shape, not a model from disk
    for record in (ours, peer):
        assert record["real_tok_s"] > 0 and record["final_loss"] > 0
        assert record["mfu"] == round(record["real_tok_s"] * 4 * report["params"] / 1e12, 4)
    assert report["against_tuned_peers"]["best_tuned_peer"] == "hf_tuned"
    assert report["against_tuned_peers"]["ours_speedup"] == peer["ours_speedup"]
    table = capsys.readouterr().out
    precision = "bf16 autocast, bf16 base" if contenders.tuned_bf16() else "fp32"  # as ours chooses on this CPU
    assert f"tuned: {precision}, sdpa, padding-free, grad ckpt off" in table
    assert "daemon callbacks" in table


def test_without_trl_the_trl_contenders_are_skipped_with_the_install_command(monkeypatch, capsys):
    monkeypatch.setattr(throughput.importlib.util, "find_spec", lambda name: None)

    assert throughput.runnable(["ours", "trl", "hf_tuned", "trl_tuned"], "cpu") == ["ours", "hf_tuned"]
    assert "pip install -e '.[bench]'" in capsys.readouterr().out


def test_cuda_without_a_gpu_says_so(monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)

    with pytest.raises(SystemExit, match="no CUDA GPU"):
        throughput.runnable(["ours"], "cuda")


def test_the_device_picks_its_defaults():
    gpu = throughput.parse_args(["--device", "cuda"])
    cpu = throughput.parse_args([])

    assert (gpu.shape, gpu.model, gpu.batch_size, gpu.steps) == ("qwen2-0.5b", None, 16, 30)
    assert gpu.only == ["ours", "ours_gc", "hf_tuned"]
    assert (cpu.shape, cpu.model, cpu.batch_size, cpu.steps) == (None, throughput.DEFAULT_TOKENIZER, 4, 10)
    assert cpu.only == ["ours", "hf_tuned", "trl_tuned", "hf", "trl"]
