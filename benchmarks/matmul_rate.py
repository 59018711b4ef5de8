"""The machine's dense matmul rate in bf16 and fp32, the denominator of the MFU estimate.

    python -m benchmarks.matmul_rate RESULT.json

Square ``torch.matmul`` on the training device with the same thread count training uses; the best
of a few repeats after a warm-up, so the figure is what the hardware sustains, not a cold start.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from trainer.model.hardware import select_precision

SIZE = 2048
REPEATS = 5


def matmul_gflops(dtype: torch.dtype, size: int = SIZE, repeats: int = REPEATS) -> float:
    """Best sustained GFLOP/s of a ``size``-square matmul in ``dtype`` on CPU or the current GPU."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        torch.matmul(a, b)
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


EMULATED_SIZE = 512
"""bf16 on a device without native bf16 (a CPU without AVX512-BF16 or AMX) runs about 300x slower than
fp32: a 2048-square product would take a minute, so its (reported, never used) rate is taken smaller."""


def main(argv: list[str]) -> None:
    """Write ``{"bf16_gflops": ..., "fp32_gflops": ..., "threads": ...}`` to the given path."""
    native_bf16 = select_precision("auto").value == "bf16"
    result = {
        "bf16_gflops": round(matmul_gflops(torch.bfloat16, SIZE if native_bf16 else EMULATED_SIZE), 1),
        "fp32_gflops": round(matmul_gflops(torch.float32), 1),
        "threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
    }
    Path(argv[0]).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
