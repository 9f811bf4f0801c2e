"""Authentication on every route, and Terraform's HTTP state backend lock protocol, through a
real ``nclav serve`` over plain HTTP. No terraform is needed here."""

from __future__ import annotations

import base64
import json
import re
import uuid
from typing import TYPE_CHECKING, Any

from serve_harness import server_factory_fixture, shared_server_fixture  # noqa: F401

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from serve_harness import Response, Server

PUBLIC = {("GET", "/health"), ("GET", "/ready")}
# Push webhooks take no bearer token: a delivery proves itself with its signature (issue 15).
SIGNED = {("POST", "/webhooks/github"), ("POST", "/webhooks/gitlab"), ("POST", "/webhooks/git")}

# The web dashboard's page, assets and sign-in (nclav.ui): public, and holding no data.
DASHBOARD_PUBLIC = {
    ("GET", "/ui"),
    ("GET", "/ui/static/{asset}"),
    ("POST", "/ui/login"),
    ("POST", "/ui/logout"),
    ("GET", "/ui/session"),
}
# Routes the issue names; the test walks /openapi.json, so routes added later are covered too.
EXPECTED = {
    ("GET", "/enclaves"),
    ("GET", "/enclaves/{id}"),
    ("DELETE", "/enclaves/{id}"),
    ("GET", "/enclaves/{id}/graph"),
    ("DELETE", "/enclaves/{id}/partitions/{part}"),
    ("GET", "/enclaves/{id}/partitions/{part}/iac/runs"),
    ("GET", "/enclaves/{id}/partitions/{part}/iac/runs/latest"),
    ("GET", "/enclaves/{id}/partitions/{part}/iac/runs/{run_id}"),
    ("GET", "/enclaves/{id}/partitions/{part}/iac/runs/{run_id}/log"),
    ("GET", "/events"),
    ("GET", "/graph"),
    ("GET", "/status"),
    ("GET", "/orphans"),
    ("GET", "/runs"),
    ("GET", "/runs/{run_id}"),
    ("POST", "/reconcile"),
    ("POST", "/reconcile/dry-run"),
    ("POST", "/bundles"),
    ("GET", "/openapi.json"),
    ("GET", "/terraform/state/{enc}/{part}"),
    ("POST", "/terraform/state/{enc}/{part}"),
    ("DELETE", "/terraform/state/{enc}/{part}"),
    ("POST", "/terraform/state/{enc}/{part}/lock"),
    ("DELETE", "/terraform/state/{enc}/{part}/lock"),
    *PUBLIC,
}
PARAMS = {
    "id": "no-such-enclave",
    "part": "p",
    "enc": "e",
    "run_id": str(uuid.uuid4()),
    "digest": "0" * 64,
    "asset": "app.js",
}
BODIES: dict[tuple[str, str], bytes] = {
    ("POST", "/reconcile"): b'{"enclaves_dir": "/nonexistent"}',
    ("POST", "/reconcile/dry-run"): b'{"enclaves_dir": "/nonexistent"}',
    ("POST", "/bundles"): b"not a tarball",
    ("POST", "/terraform/state/{enc}/{part}"): b'{"version": 4}',
    ("POST", "/terraform/state/{enc}/{part}/lock"): b'{"ID": "auth-probe"}',
}


def basic(password: str, user: str = "nclav") -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def assert_error(response: Response, status: int, code: str) -> dict[str, Any]:
    assert response.status == status, response
    assert response.headers["Content-Type"] == "application/json", response
    error = response.json["error"]
    assert error["code"] == code and error["message"], error
    assert re.fullmatch(r"[0-9a-f]{32}", error["request_id"])
    assert response.headers["X-Request-Id"] == error["request_id"]
    assert "Traceback" not in response.text
    return error  # type: ignore[no-any-return]


def routes(server: Server) -> list[tuple[str, str]]:
    doc = server.ok("GET", "/openapi.json")
    found = [(m.upper(), path) for path, ops in doc["paths"].items() for m in ops]
    assert set(found) >= EXPECTED, EXPECTED - set(found)
    public = {
        (m.upper(), p)
        for p, ops in doc["paths"].items()
        for m, op in ops.items()
        if not op.get("security")
    }
    assert public == PUBLIC | SIGNED | DASHBOARD_PUBLIC
    return sorted(found)


def concrete(pattern: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: PARAMS[m.group(1)], pattern)


def release(server: Server, method: str, pattern: str) -> None:
    """Undo a successful LOCK, so the next call on the route is not refused with 423."""
    if (method, pattern) == ("POST", "/terraform/state/{enc}/{part}/lock"):
        assert server.request("DELETE", concrete(pattern)).status == 200


def test_every_route_with_no_wrong_and_right_token(shared_server: Server) -> None:
    server = shared_server
    wrong = [
        None,
        f"Bearer {'0' * 64}",
        f"Bearer {server.token[:-1]}",
        f"bearer {server.token}x",
        f"Token {server.token}",
        basic("0" * 64),
        "Basic !!not-base64!!",
        "Bearer",
    ]
    for method, pattern in routes(server):
        path = concrete(pattern)
        body: Any = BODIES.get((method, pattern))
        if (method, pattern) in SIGNED:  # unsigned: refused whatever the Authorization
            for auth in [*wrong, f"Bearer {server.token}"]:
                response = server.request(method, path, b"{}", auth=auth or False)
                assert_error(response, 401, "unauthorized")
            continue
        if (method, pattern) == ("POST", "/ui/login"):
            body = {"token": server.token}  # it reads the token from its body, not a header
        if (method, pattern) in PUBLIC | DASHBOARD_PUBLIC:
            for auth in [*wrong, f"Bearer {server.token}"]:
                response = server.request(method, path, body, auth=auth or False)
                assert response.status == 200, (method, path, auth, response)
            continue
        for auth in wrong:
            response = server.request(method, path, body, auth=auth or False)
            error = assert_error(response, 401, "unauthorized")
            assert "Bearer" in response.headers["WWW-Authenticate"], (method, path)
            assert server.token not in response.text and "Traceback" not in error["message"]
        # Basic with the right token: only the Terraform state backend takes it.
        response = server.request(method, path, body, auth=basic(server.token))
        if pattern.startswith("/terraform/state/"):
            assert response.status in (200, 204), (method, path, response)
            challenge = server.request(method, path, body, auth=False).headers["WWW-Authenticate"]
            assert "Basic" in challenge
        else:
            assert_error(response, 401, "unauthorized")
        release(server, method, pattern)
        # The right token: never 401, never 500; errors keep the one JSON shape.
        for auth in (f"Bearer {server.token}", f"bearer  {server.token} "):
            response = server.request(method, path, body, auth=auth)
            assert response.status not in (401, 500), (method, path, response)
            if response.status >= 400:
                assert_error(response, response.status, response.json["error"]["code"])
            release(server, method, pattern)
    assert "unhandled error" not in server.stderr()


def test_an_unauthenticated_body_is_refused_before_it_is_parsed(shared_server: Server) -> None:
    server = shared_server
    for method, path in [("POST", "/reconcile"), ("POST", "/terraform/state/e/p/lock")]:
        assert_error(server.request(method, path, b"{not json", auth=False), 401, "unauthorized")
        # A big body is refused from its headers alone, before a byte of it is sent.
        refused = server.headers_only(method, path, 50 * 1024 * 1024, auth="Bearer x")
        assert_error(refused, 401, "unauthorized")
        assert refused.headers["Connection"] == "close"


def test_the_token_is_printed_once_kept_in_a_0600_file_and_reused(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    server = server_factory()
    token_file = server.home / "token"
    assert re.fullmatch(r"[0-9a-f]{64}", server.token)
    assert server.token in server.first_stdout
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert server.stop() == 0
    server.start()
    assert server.token == token_file.read_text().strip()
    assert server.token not in server.stdout_path.read_text()  # printed once only
    assert server.get("/enclaves").status == 200

    env_token = "f" * 64
    other = server_factory(env={"NCLAV_TOKEN": env_token})
    assert not (other.home / "token").exists()  # the override is never written down
    assert other.get("/enclaves", auth=f"Bearer {env_token}").status == 200
    assert other.get("/enclaves", auth=f"Bearer {server.token}").status == 401


def test_terraform_state_lock_protocol(shared_server: Server) -> None:
    server = shared_server
    state = "/terraform/state/lock-e/lock-p"
    lock_url = state + "/lock"
    holder = {
        "ID": "11111111-aaaa",
        "Operation": "OperationTypeApply",
        "Info": "",
        "Who": "alice@laptop",
        "Version": "1.11.4",
        "Created": "2026-01-01T00:00:00Z",
        "Path": "",
    }
    other = {**holder, "ID": "22222222-bbbb", "Who": "bob@desktop"}

    empty = server.get(state)
    assert empty.status == 204 and empty.body == b""

    # POST stores a version; every version is kept and the newest is current.
    v1 = json.dumps({"version": 4, "serial": 1, "lineage": "l", "resources": []}).encode()
    v2 = json.dumps({"version": 4, "serial": 2, "lineage": "l", "resources": []}).encode()
    assert server.request("POST", state, v1).status == 200
    assert server.get(state).body == v1
    assert server.request("POST", state, v2).status == 200
    current = server.get(state)
    assert current.status == 200 and current.body == v2
    assert current.headers["Content-Type"] == "application/json"
    versions = sorted((server.home / "blobs" / "tfstate" / "lock-e" / "lock-p").iterdir())
    assert [v.read_bytes() for v in versions] == [v1, v2]

    # LOCK, then a second LOCK (same or other ID) is 423 with the holder's info.
    assert server.request("POST", lock_url, holder).status == 200
    for contender in (other, holder):
        refused = server.request("POST", lock_url, contender)
        assert refused.status == 423, refused
        assert refused.json == holder

    # A POST from a non-holder while locked is 409 with the holder; the holder may write.
    v3 = v2.replace(b'"serial": 2', b'"serial": 3')
    for query in ("?ID=22222222-bbbb", ""):
        conflict = server.request("POST", state + query, v3)
        assert conflict.status == 409 and conflict.json == holder, (query, conflict)
    assert server.get(state).body == v2
    assert server.request("POST", state + "?ID=11111111-aaaa", v3).status == 200
    assert server.get(state).body == v3

    # UNLOCK with another ID is 409 and keeps the lock.
    conflict = server.request("DELETE", lock_url, other)
    assert conflict.status == 409 and conflict.json == holder
    assert server.request("POST", lock_url, other).status == 423
    # A garbled UNLOCK body is refused, never taken for a force-unlock.
    assert_error(server.request("DELETE", lock_url, b"{garbled"), 400, "bad_request")
    assert server.request("POST", lock_url, other).status == 423
    # UNLOCK with no body force-unlocks.
    assert server.request("DELETE", lock_url).status == 200
    assert server.request("POST", lock_url, other).status == 200
    # The holder unlocks with its own ID; unlocking again is harmless.
    assert server.request("DELETE", lock_url, other).status == 200
    assert server.request("DELETE", lock_url, other).status == 200
    assert server.request("POST", state, v1).status == 200  # unlocked: anyone may write

    # Terraform's way in: Basic auth, any user, the API token as the password.
    for user in ("nclav", "terraform", ""):
        response = server.get(state, auth=basic(server.token, user))
        assert response.status == 200 and response.body == v1
    assert server.request("POST", lock_url, holder, auth=basic(server.token)).status == 200
    assert server.request("POST", lock_url, other, auth=basic(server.token)).status == 423
    assert server.request("DELETE", lock_url, holder, auth=basic(server.token)).status == 200
    assert_error(server.get(state, auth=basic("not-the-token")), 401, "unauthorized")

    # Bad lock requests are 4xx, never 500.
    assert_error(server.request("POST", lock_url, b""), 400, "bad_request")
    assert_error(server.request("POST", lock_url, b"[1]"), 400, "bad_request")
    assert_error(server.request("POST", lock_url, b"{}"), 422, "validation_error")
    assert_error(server.request("POST", lock_url, {"ID": 7}), 422, "validation_error")
    assert_error(server.get("/terraform/state/-bad/p"), 422, "validation_error")

    # DELETE forgets the current state; the next GET is 204 again.
    assert server.request("DELETE", state).status == 200
    assert server.get(state).status == 204
    assert len(list(versions[0].parent.iterdir())) == 4  # v1, v2, v3, v1: every one kept
