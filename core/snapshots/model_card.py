"""Each snapshot's ``README.md``: a model card that says what the model is and how to load it.

PEFT's ``save_pretrained`` leaves an empty template there. The card written instead names the base
model, the files the lineage was trained on (this snapshot's file and its parents' while their
manifests exist), the steps and losses, and the lines that load the snapshot, with the Hugging
Face front matter (``base_model``, ``library_name``) that hub tools read.
"""

from __future__ import annotations

import json
from pathlib import Path

from core.base.atomic import atomic_write_text
from trainer.model.model_dirs import ADAPTER_CONFIG

CARD_NAME = "README.md"
MANIFEST_NAME = "manifest.json"


def write_model_card(folder: Path, manifest: dict, snapshots_dir: Path) -> Path:
    """Write ``folder/README.md`` for the snapshot described by ``manifest``; returns its path."""
    path = folder / CARD_NAME
    atomic_write_text(path, model_card(manifest, _recorded_base(folder), lineage(manifest, snapshots_dir)))
    return path


def model_card(manifest: dict, adapter_base: str | None, files: list[str]) -> str:
    """The card's Markdown text.

    Args:
        manifest: The snapshot's manifest (with its ``id``).
        adapter_base: The base model an adapter records (``base_model_name_or_path``), None for a full model.
        files: The files trained on, oldest first.
    """
    config = manifest.get("config") or {}
    name = config.get("base_model") or "?"
    library = "peft" if adapter_base else "transformers"
    lora = config.get("lora") or {}
    method = (
        f"LoRA adapter (r={lora.get('r')}, alpha={lora.get('alpha')}, targets {lora.get('target_modules')})"
        if adapter_base else f"{config.get('method', 'full')} fine-tune, every weight saved"
    )
    rows = [
        ("base model", f"`{name}`" + (f" (weights at `{adapter_base}`)" if adapter_base else "")),
        ("method", method),
        ("trained on", ", ".join(f"`{f}`" for f in files) or "?"),
        ("this snapshot's file", f"`{manifest.get('source_file')}` (SHA-256 `{manifest.get('sha256')}`)"),
        ("examples, steps", f"{manifest.get('rows')}, {manifest.get('steps')}"),
        ("training loss", _losses(manifest)),
        ("eval loss", _number(manifest.get("eval_loss"))),
        ("parent snapshot", f"`{manifest.get('parent_snapshot')}`" if manifest.get("parent_snapshot") else "none (base model)"),
        ("profile", f"`{manifest.get('profile')}`"),
        ("created (UTC)", str(manifest.get("created_at"))),
    ]
    table = "\n".join(f"| {key} | {value} |" for key, value in rows)
    return f"""---
base_model: {json.dumps(name)}
library_name: {library}
tags: [trainctl{", lora" if adapter_base else ""}]
---

# Snapshot {manifest.get("id")}

{config.get("model_display_name", "A model")} trained by trainctl. `manifest.json` lists every file
of this folder with its SHA-256 and the full config the run used.

| | |
| --- | --- |
{table}

## How to load it

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

model = AutoModelForCausalLM.from_pretrained("PATH/TO/THIS/FOLDER")  # e.g. mybase/current_model
tokenizer = AutoTokenizer.from_pretrained("PATH/TO/THIS/FOLDER")
```
{_adapter_note(adapter_base)}"""


def lineage(manifest: dict, snapshots_dir: Path) -> list[str]:
    """The files trained on, oldest first: the parents' (while their manifests exist), then this one's."""
    files = [manifest.get("source_file") or "?"]
    seen = {manifest.get("id")}
    parent = manifest.get("parent_snapshot")
    while parent and parent not in seen:
        seen.add(parent)
        try:
            record = json.loads((snapshots_dir / parent / MANIFEST_NAME).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            files.append(f"(earlier files of pruned snapshot {parent})")
            break
        files.append(record.get("source_file") or "?")
        parent = record.get("parent_snapshot")
    return files[::-1]


def _adapter_note(adapter_base: str | None) -> str:
    if not adapter_base:
        return ""
    return (
        "\nThis is a LoRA adapter: with `peft` installed, transformers loads the base model it records in\n"
        f"`adapter_config.json` (`{adapter_base}`) and applies the adapter. Should that base move, load\n"
        "it yourself and apply the adapter: `PeftModel.from_pretrained(base, \"PATH/TO/THIS/FOLDER\")`.\n"
    )


def _recorded_base(folder: Path) -> str | None:
    try:
        return json.loads((folder / ADAPTER_CONFIG).read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (OSError, ValueError):
        return None


def _losses(manifest: dict) -> str:
    first, last, mean = manifest.get("first_loss"), manifest.get("last_loss"), manifest.get("mean_loss")
    return f"mean {_number(mean)} (first step {_number(first)}, last step {_number(last)})"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
