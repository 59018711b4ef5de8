"""``status/http_token``: written once at init, owner-only, printed by ``trainctl http-token``."""

from __future__ import annotations

from core.cli import main
from core.state.http_token import ensure_http_token, read_http_token
from core.state.layout import init_base_dir


def test_init_writes_a_private_token_once_and_http_token_prints_it(tmp_path, capsys):
    base = init_base_dir(tmp_path / "base")
    token = read_http_token(base.http_token_file)
    init_base_dir(tmp_path / "base")

    assert len(token) >= 32 and read_http_token(base.http_token_file) == token
    assert base.http_token_file.stat().st_mode & 0o777 == 0o600
    assert main(["http-token", "--base-dir", str(base.root)]) == 0
    assert capsys.readouterr().out.strip() == token


def test_a_missing_token_is_made_and_two_base_dirs_get_different_ones(tmp_path):
    first = ensure_http_token(tmp_path / "a" / "status" / "http_token")
    second = ensure_http_token(tmp_path / "b" / "status" / "http_token")
    assert first != second
    assert sorted(p.name for p in (tmp_path / "a" / "status").iterdir()) == ["http_token"]
