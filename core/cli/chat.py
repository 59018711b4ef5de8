"""``trainctl chat``: talk to the current model (or any snapshot), one reply or interactively."""

from __future__ import annotations

import argparse
import sys
import time

import torch
from transformers.utils.logging import disable_progress_bar

from core.snapshots.selection import select_model
from core.state import layout
from profiles import get_profile
from trainer.config import load_config
from trainer.inference.chat import ChatSession, GenerationSettings
from trainer.inference.loading import generation_threads, load_trained

CURRENT = "current"
_HELP = "type a message; /reset forgets the conversation, /exit (or Ctrl-D) quits"


def cmd_chat(args: argparse.Namespace) -> int:
    disable_progress_bar()  # the weight-loading bars would bury the reply
    threads = args.threads or min(torch.get_num_threads(), generation_threads())
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        base = layout.BaseDir.at(args.base_dir)
        selected = select_model(base, load_config(base.config_file), args.snapshot, allow_base=True)
        started = time.monotonic()
        loaded = load_trained(selected.path, selected.base)
        how = f"LoRA adapter on {loaded.base}" if loaded.base else "full model"
        print(f"chat: {selected.label} ({how}, profile {selected.profile}), loaded in "
              f"{time.monotonic() - started:.1f} s, {threads} CPU thread(s)", file=sys.stderr)
        session = ChatSession(loaded.model, loaded.tokenizer, get_profile(selected.profile), system=args.system)
        _converse(session, GenerationSettings(max_new_tokens=args.max_new_tokens, temperature=args.temperature),
                  args.prompt)
    finally:
        torch.set_num_threads(before)  # the process may go on (tests call main() in-process)
    return 0


def _converse(session, settings, prompt: str | None) -> None:
    """One reply to ``prompt``, or a conversation on stdin when it is None."""
    if prompt is not None:
        _answer(session, prompt, settings)
        return
    print(_HELP, file=sys.stderr)
    while (line := _read_line()) is not None:
        if line in ("/exit", "/quit"):
            break
        if line == "/reset":
            session.reset()
            print("(conversation cleared)", file=sys.stderr)
        elif line:
            _answer(session, line, settings)


def _answer(session, text: str, settings) -> None:
    session.reply(text, settings, on_text=lambda piece: print(piece, end="", flush=True))
    print(flush=True)


def _read_line() -> str | None:
    try:
        return input("you> ").strip()
    except EOFError:
        return None


def add_chat_parser(sub, parent) -> None:
    chat = sub.add_parser("chat", parents=[parent])
    chat.add_argument("snapshot", nargs="?", default=CURRENT,
                      help="'current' (default; the base model before anything is trained), a snapshot id, "
                           "unique id prefix or 'previous'")
    chat.add_argument("--prompt", help="answer this one message and exit (for scripts)")
    chat.add_argument("--system", help="system prompt instead of the profile's")
    chat.add_argument("--max-new-tokens", type=_positive_int, default=256, help="longest reply (default: 256)")
    chat.add_argument("--temperature", type=_non_negative_float, default=0.0,
                      help="0 (default) answers greedily; above 0 samples")
    chat.add_argument("--threads", type=_positive_int,
                      help="CPU threads (default: the cores other processes leave free, at least 1)")
    chat.set_defaults(func=cmd_chat)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value
