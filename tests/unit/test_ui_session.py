"""The dashboard's session cookie, CSRF token and the routes the cookie may reach, through the
real route table ``nclav serve`` builds (no server: ``Router.dispatch``), and through the Lambda
translation (functions_aws.api), which must serve the same pages, assets and cookies."""

from __future__ import annotations

import base64
import gzip
import json
import re
from typing import TYPE_CHECKING, Any

import pytest

from nclav.api.auth import TokenAuth
from nclav.api.http import ApiRequest, ApiResponse, Forbidden, Unauthorized
from nclav.local.runtime import LocalOptions, LocalRuntime
from nclav.ui.models import Overview, SessionInfo
from nclav.ui.routes import CSP
from nclav.ui.session import (
    COOKIE_NAME,
    CSRF_HEADER,
    KEY_PURPOSE,
    SessionAuth,
    SessionCodec,
    set_cookie,
)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from nclav.api.router import Router

TOKEN = "b" * 64
JSON = {"Content-Type": "application/json"}


def make_runtime(home: Path, token: str = TOKEN) -> LocalRuntime:
    return LocalRuntime(LocalOptions(home=home, ephemeral=True), token=token)


@pytest.fixture(name="router", scope="module")
def router_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Router]:
    runtime = make_runtime(tmp_path_factory.mktemp("home"))
    try:
        yield runtime.router
    finally:
        runtime.stop()


def send(
    router: Router,
    method: str,
    target: str,
    *,
    headers: dict[str, str] | None = None,
    body: Any = None,
) -> ApiResponse:
    data = b"" if body is None else json.dumps(body).encode()
    return router.dispatch(ApiRequest.build(method, target, headers=headers or {}, body=data))


def login(router: Router, token: str = TOKEN, **headers: str) -> tuple[str, str]:
    """The cookie header value and CSRF token of a new session."""
    response = send(router, "POST", "/ui/login", headers={**JSON, **headers}, body={"token": token})
    assert response.status == 200, response
    cookie = response.headers["Set-Cookie"].split(";")[0]
    return cookie, json.loads(response.body)["csrf_token"]


# -- the codec --------------------------------------------------------------------------------


def test_a_cookie_round_trips_and_expires() -> None:
    codec = SessionCodec(b"k" * 32, ttl_s=60)
    session, value = codec.issue(now=1000)
    assert codec.verify(value, now=1059) == session
    assert codec.verify(value, now=1060) is None  # expired


@pytest.mark.parametrize(
    "forge",
    [
        lambda v: v[:-2] + ("AA" if not v.endswith("AA") else "BB"),  # another MAC
        lambda v: "x" + v,  # another payload
        lambda v: v.split(".")[0],  # no MAC
        lambda v: "",
        lambda v: "...",
        lambda v: "%%%.%%%",
    ],
)
def test_a_forged_or_broken_cookie_is_refused(forge: Any) -> None:
    codec = SessionCodec(b"k" * 32)
    _session, value = codec.issue()
    assert codec.verify(forge(value)) is None


def test_a_cookie_signed_under_another_key_is_refused() -> None:
    _session, value = SessionCodec(b"k" * 32).issue()
    assert SessionCodec(b"j" * 32).verify(value) is None


def test_the_csrf_token_belongs_to_its_session() -> None:
    codec = SessionCodec(b"k" * 32)
    one, _ = codec.issue()
    two, _ = codec.issue()
    assert codec.check_csrf(one, codec.csrf_token(one))
    assert not codec.check_csrf(one, codec.csrf_token(two))
    assert not codec.check_csrf(one, None)
    assert not codec.check_csrf(one, "")


def test_the_key_comes_from_the_token_and_changes_with_it() -> None:
    one = TokenAuth("a" * 64).derive_key(KEY_PURPOSE)
    assert one == TokenAuth("a" * 64).derive_key(KEY_PURPOSE)
    assert len(one) == 32
    assert one != TokenAuth("c" * 64).derive_key(KEY_PURPOSE)
    assert one != TokenAuth("a" * 64).derive_key("another purpose")
    assert b"a" * 64 not in one


@pytest.mark.parametrize(
    ("headers", "secure"),
    [({}, False), ({"X-Forwarded-Proto": "https"}, True), ({"X-Forwarded-Proto": "http"}, False)],
)
def test_the_cookie_is_http_only_strict_and_secure_over_https(
    headers: dict[str, str], secure: bool
) -> None:
    value = set_cookie(ApiRequest.build("POST", "/ui/login", headers=headers), "v", 60)
    attributes = [a.strip() for a in value.split(";")]
    assert attributes[0] == f"{COOKIE_NAME}=v"
    assert {"HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=60"} <= set(attributes)
    assert ("Secure" in attributes) is secure


# -- login and what the cookie reaches -------------------------------------------------------------


def test_login_needs_this_servers_token_as_json(router: Router) -> None:
    wrong = send(router, "POST", "/ui/login", headers=JSON, body={"token": "c" * 64})
    assert wrong.status == 401
    assert "Set-Cookie" not in wrong.headers
    form = send(router, "POST", "/ui/login", body={"token": TOKEN})  # no JSON content type
    assert form.status == 400
    extra = send(router, "POST", "/ui/login", headers=JSON, body={"token": TOKEN, "x": 1})
    assert extra.status == 422


def test_the_cookie_reaches_the_dashboards_reads(router: Router) -> None:
    cookie, _csrf = login(router)
    for path in ("/status", "/graph", "/enclaves", "/runs", "/events", "/ui/api/overview"):
        assert send(router, "GET", path, headers={"Cookie": cookie}).status == 200, path
    overview = send(router, "GET", "/ui/api/overview", headers={"Cookie": cookie})
    Overview.model_validate_json(overview.body)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/openapi.json"),
        ("POST", "/bundles"),
        ("POST", "/reconcile"),
        ("POST", "/reconcile/dry-run"),
        ("DELETE", "/enclaves/web-dev"),
        ("DELETE", "/enclaves/web-dev/partitions/frontend"),
        ("GET", "/orphans"),
        ("GET", "/terraform/state/web-dev/frontend"),
        ("POST", "/terraform/state/web-dev/frontend/lock"),
    ],
)
def test_the_cookie_reaches_nothing_else(router: Router, method: str, path: str) -> None:
    cookie, csrf = login(router)
    response = send(router, method, path, headers={"Cookie": cookie, CSRF_HEADER: csrf})
    assert response.status == 401, response


def test_a_bearer_header_is_judged_on_its_own(router: Router) -> None:
    cookie, _csrf = login(router)
    headers = {"Cookie": cookie, "Authorization": "Bearer " + "c" * 64}
    assert send(router, "GET", "/status", headers=headers).status == 401
    assert (
        send(router, "GET", "/status", headers={"Cookie": f"{COOKIE_NAME}=forged.x"}).status == 401
    )


def test_a_session_from_a_rotated_token_is_refused(tmp_path: Path) -> None:
    old = make_runtime(tmp_path / "old", "d" * 64)
    new = make_runtime(tmp_path / "new", "e" * 64)
    try:
        cookie, _csrf = login(old.router, "d" * 64)
        assert send(new.router, "GET", "/status", headers={"Cookie": cookie}).status == 401
    finally:
        old.stop()
        new.stop()


def test_actions_need_the_csrf_header() -> None:
    """The actions (approve, cancel, drift check/ack) come from other branches; the check is
    the authenticator's, so it is tested on it directly."""

    auth = SessionAuth(TokenAuth(TOKEN), SessionCodec(b"k" * 32))
    session, value = auth.codec.issue()
    cookie = f"{COOKIE_NAME}={value}"
    target = "/runs/0f6b0aad-c358-48a1-9035-d438ebd7b554/approve"

    def action(**headers: str) -> ApiRequest:
        return ApiRequest.build("POST", target, headers={"Cookie": cookie, **headers})

    with pytest.raises(Forbidden):
        auth.authenticate(action(), "bearer")
    with pytest.raises(Forbidden):
        auth.authenticate(action(**{CSRF_HEADER: "x" * 43}), "bearer")
    auth.authenticate(action(**{CSRF_HEADER: auth.codec.csrf_token(session)}), "bearer")
    with pytest.raises(Unauthorized):  # a Basic-only route (Terraform state) never takes it
        auth.authenticate(
            action(**{CSRF_HEADER: auth.codec.csrf_token(session)}), "bearer_or_basic"
        )


def test_session_info_says_whether_signed_in_and_what_the_server_offers(router: Router) -> None:
    anonymous = SessionInfo.model_validate_json(send(router, "GET", "/ui/session").body)
    assert anonymous.signed_in is False and anonymous.csrf_token is None
    cookie, csrf = login(router)
    info = SessionInfo.model_validate_json(
        send(router, "GET", "/ui/session", headers={"Cookie": cookie}).body
    )
    assert info.signed_in and info.csrf_token == csrf
    served = {(r.method, r.pattern) for r in router.routes}
    assert info.features["approvals"] == (("POST", "/runs/{run_id}/approve") in served)
    assert info.features["drift"] == (("GET", "/drift") in served)


def test_logout_clears_the_cookie(router: Router) -> None:
    response = send(router, "POST", "/ui/logout")
    assert response.status == 200
    assert response.headers["Set-Cookie"].startswith(f"{COOKIE_NAME}=;")
    assert "Max-Age=0" in response.headers["Set-Cookie"]


# -- the page and its assets ---------------------------------------------------------------------


def test_the_page_and_assets_come_from_the_package_with_a_strict_csp(router: Router) -> None:
    page = send(router, "GET", "/ui")
    assert page.status == 200
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert page.headers["Content-Security-Policy"] == CSP
    assert page.headers["X-Frame-Options"] == "DENY"
    html = page.body.decode()
    assert "<script>" not in html and "style=" not in html  # nothing inline for the CSP
    refs = re.findall(r'(?:src|href)="(ui/static/[^"]+)"', html)
    assert {"ui/static/app.js", "ui/static/style.css", "ui/static/icon.svg"} == set(refs)
    for ref in refs:
        asset = send(router, "GET", "/" + ref)
        assert asset.status == 200, ref
        assert asset.headers["Content-Security-Policy"] == CSP
    app = send(router, "GET", "/ui/static/app.js")
    assert app.headers["Content-Type"] == "text/javascript; charset=utf-8"
    # Every module app.js imports is served too.
    for module in re.findall(r'from "\./([a-z0-9_-]+\.js)"', app.body.decode()):
        assert send(router, "GET", f"/ui/static/{module}").status == 200


def test_scripts_escape_data_and_name_no_other_origin(router: Router) -> None:
    for name in ("app.js", "graph.js"):
        source = send(router, "GET", f"/ui/static/{name}").body.decode()
        assert "innerHTML" not in source and "outerHTML" not in source
        assert "insertAdjacentHTML" not in source and "eval(" not in source
        assert "localStorage" not in source and "sessionStorage" not in source
        urls = set(re.findall(r"https?://[^\s\"'`]+", source))
        assert urls <= {"http://www.w3.org/2000/svg"}, urls  # the SVG namespace, not a fetch


def test_assets_are_gzipped_and_revalidated(router: Router) -> None:
    plain = send(router, "GET", "/ui/static/style.css")
    zipped = send(router, "GET", "/ui/static/style.css", headers={"Accept-Encoding": "gzip, br"})
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(zipped.body) == plain.body
    assert len(zipped.body) < len(plain.body)
    again = send(
        router, "GET", "/ui/static/style.css", headers={"If-None-Match": plain.headers["ETag"]}
    )
    assert again.status == 304 and again.body == b""


@pytest.mark.parametrize("name", ["index.html", "nope.js", "APP.JS", "app.js.map", "%2e%2e"])
def test_only_packaged_scripts_and_styles_are_served(router: Router, name: str) -> None:
    assert send(router, "GET", f"/ui/static/{name}").status == 404


# -- the Lambda translation ----------------------------------------------------------------------


def lambda_event(method: str, path: str, **extra: Any) -> dict[str, Any]:
    return {
        "version": "2.0",
        "rawPath": path,
        "rawQueryString": "",
        "headers": extra.pop("headers", {}),
        "requestContext": {"http": {"method": method}, "requestId": "r1", "stage": "$default"},
        **extra,
    }


def test_the_lambda_function_serves_the_dashboard(router: Router) -> None:
    api = pytest.importorskip("functions_aws.api")
    asset = api.respond(
        router, lambda_event("GET", "/ui/static/app.js", headers={"accept-encoding": "gzip"})
    )
    assert asset["statusCode"] == 200 and asset["isBase64Encoded"] is True
    assert gzip.decompress(base64.b64decode(asset["body"])).startswith(b"// nclav dashboard")
    signed = api.respond(
        router,
        lambda_event(
            "POST",
            "/ui/login",
            headers={"content-type": "application/json", "x-forwarded-proto": "https"},
            body=json.dumps({"token": TOKEN}),
        ),
    )
    assert signed["statusCode"] == 200
    set_cookie_value = signed["headers"]["Set-Cookie"]
    assert "Secure" in set_cookie_value  # a function URL is HTTPS
    # The browser sends it back; payload 2.0 carries cookies in their own list.
    cookie = set_cookie_value.split(";")[0]
    status = api.respond(router, lambda_event("GET", "/status", cookies=[cookie, "other=1"]))
    assert status["statusCode"] == 200
