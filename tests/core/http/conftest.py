"""A base dir on the tiny model, and a FastAPI test client for its HTTP API."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from core.http.access import HttpContext
from core.http.app import create_app
from core.state.http_token import read_http_token
from core.state.layout import BaseDir, init_base_dir


@pytest.fixture()
def layout(tmp_path, tiny_config, monkeypatch) -> BaseDir:
    monkeypatch.setenv("TB_AUTO", "0")  # no TensorBoard server from the daemon in tests
    layout = init_base_dir(tmp_path / "base")
    layout.config_file.write_text(json.dumps(tiny_config), encoding="utf-8")
    return layout


@pytest.fixture()
def token(layout) -> str:
    return read_http_token(layout.http_token_file)


@pytest.fixture()
def auth(token) -> dict:
    return {"Authorization": f"Bearer {token}"}


def make_client(layout: BaseDir, **context) -> TestClient:
    ctx = HttpContext(layout, read_http_token(layout.http_token_file), **context)
    return TestClient(create_app(ctx))


@pytest.fixture()
def client(layout) -> TestClient:
    return make_client(layout)
