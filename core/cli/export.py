"""``trainctl export``: a snapshot as a merged safetensors model or one GGUF file, checked before it is done."""

from __future__ import annotations

import argparse
from pathlib import Path

from transformers.utils.logging import disable_progress_bar

from core.snapshots.export import export_snapshot
from core.state import layout
from trainer.config import load_config


def cmd_export(args: argparse.Namespace) -> int:
    disable_progress_bar()

    base = layout.BaseDir.at(args.base_dir)
    result = export_snapshot(
        base, load_config(base.config_file), args.snapshot, args.format, args.out,
        dtype=args.dtype, quant=args.quant, force=args.force,
    )
    print(f"exported {result.snapshot_id} ({args.format}, {result.precision}) to {result.out} in "
          f"{result.seconds:.1f} s: {', '.join(result.files)}\ncheck: {result.check.summary()}")
    return 0


def add_export_parser(sub, parent) -> None:
    export = sub.add_parser("export", parents=[parent])
    export.add_argument("snapshot", help="'current', a snapshot id, unique id prefix or 'previous'")
    export.add_argument("--format", required=True, choices=("merged", "gguf"),
                        help="merged: adapter folded into its base, safetensors; gguf: one file for llama.cpp/Ollama")
    export.add_argument("--out", required=True, type=Path, help="folder to create (refused if it exists, unless --force)")
    export.add_argument("--dtype", choices=("bf16", "f16", "f32"),
                        help="precision of the weights (default: the base model's for merged, f16 for gguf)")
    export.add_argument("--quant", choices=("q8_0",), help="gguf only: quantize the matrices (8-bit)")
    export.add_argument("--force", action="store_true", help="replace an earlier export at --out")
    export.set_defaults(func=cmd_export)
