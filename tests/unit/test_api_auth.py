"""The API token: bearer and Basic checks, constant-time comparison, and the token file."""

from __future__ import annotations

import base64
import hmac
import json
import logging
import os
import stat
from typing import TYPE_CHECKING, Any

import pytest

from nclav.api import (
    ApiRequest,
    ApiResponse,
    Router,
    TokenAuth,
    TokenError,
    generate_token,
    json_response,
    load_or_create_token,
)
from nclav.api.auth import TOKEN_PATTERN

if TYPE_CHECKING:
    from pathlib import Path

TOKEN = generate_token()


def ok(request: ApiRequest, params: dict[str, str], body: Any) -> ApiResponse:
    return json_response(200, {"ok": True})


@pytest.fixture
def router() -> Router:
    r = Router(TokenAuth(TOKEN))
    r.add("GET", "/enclaves", ok)
    r.add("GET", "/terraform/state/{enc}/{part}", ok, auth="bearer_or_basic")
    r.add("GET", "/health", ok, auth="none")
    return r


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def status(router: Router, target: str, authorization: str | None) -> ApiResponse:
    headers = {} if authorization is None else {"Authorization": authorization}
    return router.dispatch(ApiRequest.build("GET", target, headers=headers))


STATE = "/terraform/state/e/p"


@pytest.mark.parametrize(
    ("authorization", "expected"),
    [
        (f"Bearer {TOKEN}", 200),
        (f"bearer {TOKEN}", 200),  # schemes are case-insensitive
        (f"Bearer  {TOKEN} ", 200),
        (None, 401),
        ("", 401),
        ("Bearer", 401),
        ("Bearer ", 401),
        (f"Bearer {TOKEN[:-1]}", 401),
        (f"Bearer {TOKEN}x", 401),
        (f"Bearer {TOKEN.upper()}", 401),
        (f"Token {TOKEN}", 401),
        (basic("nclav", TOKEN), 401),  # Basic only where Terraform needs it
        ("Bearer tök€n", 401),
    ],
)
def test_bearer_routes(router: Router, authorization: str | None, expected: int) -> None:
    response = status(router, "/enclaves", authorization)
    assert response.status == expected
    if expected == 401:
        error = json.loads(response.body)["error"]
        assert error["code"] == "unauthorized"
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="nclav"'
        assert TOKEN not in response.body.decode()


@pytest.mark.parametrize(
    ("authorization", "expected"),
    [
        (basic("nclav", TOKEN), 200),
        (basic("anyone-at-all", TOKEN), 200),
        (basic("", TOKEN), 200),
        (f"Bearer {TOKEN}", 200),
        (basic("nclav", "wrong"), 401),
        (basic(TOKEN, ""), 401),  # the token belongs in the password
        ("Basic " + base64.b64encode(TOKEN.encode()).decode(), 401),  # no colon
        ("Basic not-base64!!", 401),
        ("Basic ünïcode", 401),
        (None, 401),
    ],
)
def test_basic_auth_on_bearer_or_basic_routes(
    router: Router, authorization: str | None, expected: int
) -> None:
    response = status(router, STATE, authorization)
    assert response.status == expected
    if expected == 401:
        challenge = response.headers["WWW-Authenticate"]
        assert challenge.startswith('Bearer realm="nclav"') and 'Basic realm="nclav"' in challenge


def test_basic_password_may_contain_colons() -> None:
    r = Router(TokenAuth("tok:en"))
    r.add("GET", "/s", ok, auth="bearer_or_basic")
    assert status(r, "/s", basic("u", "tok:en")).status == 200


def test_unprotected_route_ignores_credentials(router: Router) -> None:
    assert status(router, "/health", None).status == 200
    assert status(router, "/health", "Bearer wrong").status == 200


def test_comparisons_are_constant_time(router: Router, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[object, object]] = []
    real = hmac.compare_digest

    def recording(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", recording)
    assert status(router, "/enclaves", f"Bearer {TOKEN}").status == 200
    assert status(router, "/enclaves", "Bearer guess").status == 401
    assert status(router, STATE, basic("u", TOKEN)).status == 200
    assert calls == [
        (TOKEN.encode(), TOKEN.encode()),
        (b"guess", TOKEN.encode()),
        (TOKEN.encode(), TOKEN.encode()),
    ]
    assert all(isinstance(a, bytes) and isinstance(b, bytes) for a, b in calls)


@pytest.mark.parametrize("token", ["", "has space", "tab\there", "ünïcode", "new\nline"])
def test_unusable_tokens_are_refused(token: str) -> None:
    with pytest.raises(TokenError):
        TokenAuth(token)


def test_generated_tokens_are_64_lowercase_hex_and_unique() -> None:
    tokens = {generate_token() for _ in range(50)}
    assert len(tokens) == 50
    assert all(TOKEN_PATTERN.fullmatch(t) for t in tokens)


# --- the token file ---------------------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_first_start_creates_a_private_token_file(tmp_path: Path) -> None:
    path = tmp_path / "home" / ".nclav" / "token"
    token, created = load_or_create_token(path)
    assert created is True
    assert TOKEN_PATTERN.fullmatch(token)
    assert path.read_text() == token + "\n"
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    assert sorted(p.name for p in path.parent.iterdir()) == ["token"]  # no temp file left


def test_the_token_is_reused_across_starts(tmp_path: Path) -> None:
    path = tmp_path / "token"
    first, created = load_or_create_token(path)
    again, created_again = load_or_create_token(path)
    assert (again, created_again) == (first, False)
    assert created


def test_rotate_makes_a_new_token(tmp_path: Path) -> None:
    path = tmp_path / "d" / "token"
    first, _ = load_or_create_token(path)
    rotated, created = load_or_create_token(path, rotate=True)
    assert created and rotated != first
    assert path.read_text().strip() == rotated
    assert mode(path) == 0o600
    assert load_or_create_token(path) == (rotated, False)


def test_rotate_without_a_file_creates_one(tmp_path: Path) -> None:
    token, created = load_or_create_token(tmp_path / "token", rotate=True)
    assert created and (tmp_path / "token").read_text().strip() == token


def test_env_override_wins_and_is_never_written(tmp_path: Path) -> None:
    path = tmp_path / "d" / "token"
    assert load_or_create_token(path, env_token="my-ci-token") == ("my-ci-token", False)
    assert not path.parent.exists()
    stored, _ = load_or_create_token(path)
    assert load_or_create_token(path, rotate=True, env_token="other") == ("other", False)
    assert path.read_text().strip() == stored


def test_empty_env_override_counts_as_unset(tmp_path: Path) -> None:
    token, created = load_or_create_token(tmp_path / "token", env_token="")
    assert created and TOKEN_PATTERN.fullmatch(token)


def test_env_override_must_fit_in_a_header(tmp_path: Path) -> None:
    with pytest.raises(TokenError, match="NCLAV_TOKEN"):
        load_or_create_token(tmp_path / "token", env_token="two words")


def test_a_token_file_readable_by_others_is_fixed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    os.chmod(path, 0o644)
    with caplog.at_level(logging.WARNING, logger="nclav.api.auth"):
        assert load_or_create_token(path) == (TOKEN, False)
    assert mode(path) == 0o600
    assert "0600" in caplog.text
    assert TOKEN not in caplog.text


@pytest.mark.parametrize(
    "content", ["", "short", "A" * 64, "g" * 64, TOKEN + TOKEN, f"{TOKEN[:32]} {TOKEN[32:]}"]
)
def test_a_malformed_token_file_is_a_clear_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "token"
    path.write_text(content)
    os.chmod(path, 0o600)
    with pytest.raises(TokenError) as caught:
        load_or_create_token(path)
    message = str(caught.value)
    assert str(path) in message
    assert "64 lower-case hex" in message and "--rotate-token" in message
    if content:
        assert content not in message
    assert path.read_text() == content  # left alone for the user to inspect


def test_a_malformed_token_file_can_be_rotated_away(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("junk")
    token, created = load_or_create_token(path, rotate=True)
    assert created and path.read_text().strip() == token


def test_a_directory_in_place_of_the_token_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "token").mkdir()
    with pytest.raises(TokenError, match="token"):
        load_or_create_token(tmp_path / "token")


def test_an_existing_parent_directory_keeps_its_mode(tmp_path: Path) -> None:
    parent = tmp_path / "shared"
    parent.mkdir(mode=0o755)
    os.chmod(parent, 0o755)
    load_or_create_token(parent / "token")
    assert mode(parent) == 0o755
    assert mode(parent / "token") == 0o600


def test_the_file_is_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        load_or_create_token(tmp_path / "d" / "token")
    finally:
        os.umask(old)
    assert mode(tmp_path / "d" / "token") == 0o600
    assert mode(tmp_path / "d") == 0o700
