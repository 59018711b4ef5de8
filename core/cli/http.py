"""``trainctl serve`` and ``http-token``: the dashboard and API without a daemon, and the API's token."""

from __future__ import annotations

import argparse

from core.state import layout
from core.state.http_token import ensure_http_token
from trainer.config import load_config


def cmd_serve(args: argparse.Namespace) -> int:
    from core.http.server import HttpServer  # FastAPI and uvicorn load only for this command

    base = layout.BaseDir.at(args.base_dir)
    settings = load_config(base.config_file).http
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    server = HttpServer.open(base, settings.model_copy(update=overrides), read_only=True)
    print(f"serving {base.root} read-only on {server.url} (Ctrl-C to stop)", flush=True)
    server.serve_forever()
    return 0


def cmd_http_token(args: argparse.Namespace) -> int:
    print(ensure_http_token(layout.BaseDir.at(args.base_dir).http_token_file))
    return 0


def add_http_parsers(sub, parent) -> None:
    serve = sub.add_parser("serve", parents=[parent])
    serve.add_argument("--host", help="address to bind (default: http.host in config.json)")
    serve.add_argument("--port", type=int, help="port to bind (default: http.port, else 8765 or a free one)")
    serve.set_defaults(func=cmd_serve)
    token = sub.add_parser("http-token", parents=[parent])
    token.set_defaults(func=cmd_http_token)
