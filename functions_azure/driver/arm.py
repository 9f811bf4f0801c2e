"""Azure Resource Manager over azure-core's pipeline: REST calls, errors, long operations.

The driver speaks ARM's REST API directly (the paths and api-versions of spec §3, each checked by
the strict fake against tests/data/azure-specs) through one ``PipelineClient``: bearer tokens
from an azure-identity credential, azure-core's retry policy for throttling and 5xx, and no
per-service management SDK to import.

Nothing here sleeps. A long-running operation (a 201/202 with ``Azure-AsyncOperation`` or
``Location``) is looked at once: done, failed (``PermanentError`` with ARM's code and message),
or still running: ``WaitingError`` naming the operation URL, so the step goes back to the queue
without using up an attempt. The next delivery repeats the idempotent PUT, which answers with the
same operation until it is done.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from functions_azure._errors import AzureServiceError
from functions_azure.driver.config import ARM, ARM_SCOPE
from nclav.errors import (
    ConflictError,
    ErrorKind,
    NotFoundError,
    PermanentError,
    TemporaryError,
    WaitingError,
    classify,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

logger = logging.getLogger(__name__)

CHECK_AGAIN_S = 15.0
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 60.0
# ARM codes whose status would say otherwise.
KNOWN: dict[str, ErrorKind] = {
    "AnotherOperationInProgress": "temporary",
    "RetryableError": "temporary",
    "MissingSubscriptionRegistration": "temporary",
    "PrincipalNotFound": "temporary",
    "SubscriptionNotFound": "not_found",
}
_DONE = ("succeeded",)
_FAILED = ("failed", "canceled", "cancelled")


class ArmError(AzureServiceError):
    """ARM refused a call (access, validation): retrying will not help."""


class Response:
    def __init__(self, status: int, headers: Mapping[str, str], body: Any) -> None:
        self.status = status
        self.headers = {k.lower(): v for k, v in headers.items()}
        self.body = body if isinstance(body, dict) else {}

    @property
    def error(self) -> tuple[str, str]:
        error = self.body.get("error") or self.body.get("Error") or {}
        return str(error.get("code") or ""), str(error.get("message") or "")


def fail(response: Response, what: str) -> Exception:
    """The nclav error for a refused call (its ARM code and message, never a token)."""
    code, message = response.error
    text = f"{what}: {response.status} {code}: {message}".rstrip(": ")
    kind = classify(response.status, code, KNOWN)
    if kind == "not_found":
        return NotFoundError(text)
    if kind == "conflict":
        return ConflictError(text)
    if kind == "temporary":
        after = response.headers.get("retry-after", "")
        return TemporaryError(text, retry_after_s=float(after) if after.isdigit() else 10.0)
    return ArmError(text, status=response.status, code=code)


class Arm:
    """ARM REST calls with ``credential`` (an azure-core ``TokenCredential``)."""

    def __init__(self, credential: Any, *, endpoint: str = ARM, transport: Any = None) -> None:
        from azure.core import PipelineClient
        from azure.core.pipeline.policies import (
            BearerTokenCredentialPolicy,
            HeadersPolicy,
            RetryPolicy,
            UserAgentPolicy,
        )

        self.endpoint = endpoint.rstrip("/")
        self.credential = credential
        policies = [
            HeadersPolicy(),
            UserAgentPolicy("nclav-azure-driver"),
            RetryPolicy(retry_total=3),
            BearerTokenCredentialPolicy(credential, ARM_SCOPE),
        ]
        options: dict[str, Any] = {"policies": policies}
        if transport is not None:
            options["transport"] = transport
        self._client = PipelineClient(self.endpoint, **options)

    def call(
        self, method: str, path: str, api_version: str | None = None, body: Any = None
    ) -> Response:
        from azure.core.exceptions import ServiceRequestError, ServiceResponseError
        from azure.core.rest import HttpRequest

        url = path if path.startswith("https://") else self.endpoint + path
        params = {"api-version": api_version} if api_version else None
        request = HttpRequest(method, url, params=params, json=body)
        try:
            response = self._client.send_request(
                request, connection_timeout=CONNECT_TIMEOUT_S, read_timeout=READ_TIMEOUT_S
            )
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise TemporaryError(f"{method} {path}: {type(exc).__name__}") from exc
        try:
            parsed = response.json() if response.text() else None
        except ValueError:
            parsed = None
        return Response(response.status_code, response.headers, parsed)

    # -- verbs ---------------------------------------------------------------------------------

    def get(self, path: str, api_version: str, what: str = "") -> dict[str, Any] | None:
        """The resource, or None when ARM answers 404."""
        response = self.call("GET", path, api_version)
        if response.status == 404:
            return None
        if response.status >= 400:
            raise fail(response, what or f"GET {path}")
        return response.body

    def put(self, path: str, api_version: str, body: Any, what: str) -> dict[str, Any]:
        """PUT and, for a long-running one, one look at its operation (see the module doc)."""
        response = self.call("PUT", path, api_version, body)
        if response.status >= 400:
            raise fail(response, what)
        return self.settle(response, path, api_version, what)

    def post(self, path: str, api_version: str, body: Any, what: str) -> Response:
        response = self.call("POST", path, api_version, body)
        if response.status >= 400:
            raise fail(response, what)
        return response

    def delete(self, path: str, api_version: str, what: str) -> None:
        """DELETE; gone already (404, 204) is done; a 202 is looked at once."""
        response = self.call("DELETE", path, api_version)
        if response.status in (200, 204, 404):
            return
        if response.status >= 400:
            raise fail(response, what)
        self.settle(response, None, api_version, what)

    def settle(
        self, response: Response, path: str | None, api_version: str, what: str
    ) -> dict[str, Any]:
        state = str(response.body.get("properties", {}).get("provisioningState") or "").lower()
        operation = response.headers.get("azure-asyncoperation")
        location = response.headers.get("location")
        if response.status in (200, 201) and (state in _DONE or not (operation or location)):
            return response.body
        url = operation or location
        if not url:  # 202 without a way to follow it: look at the resource itself
            return response.body
        polled = self.call("GET", url)
        if polled.status >= 400:
            raise fail(polled, f"{what} (operation {url})")
        status = str(polled.body.get("status") or "").lower()
        if operation and status in _FAILED:
            code, message = polled.error
            raise PermanentError(f"{what}: operation {status}: {code}: {message}".rstrip(": "))
        finished = status in _DONE if operation else polled.status in (200, 204)
        if not finished:
            after = polled.headers.get("retry-after") or response.headers.get("retry-after") or ""
            raise WaitingError(
                f"{what}: still running (operation {url}); checking again later",
                retry_after_s=float(after) if after.isdigit() else CHECK_AGAIN_S,
            )
        if path is None:
            return {}
        done = self.get(path, api_version, what)
        if done is None:
            raise PermanentError(f"{what}: the operation succeeded but {path} is not there")
        return done


def default_credential(tenant_id: str, client_id: str | None, client_secret: str | None) -> Any:
    """The seed README's chain: the configured service principal, else one in the environment
    (``AZURE_CLIENT_ID``/``AZURE_CLIENT_SECRET``/``AZURE_TENANT_ID``), else managed identity
    (``AZURE_CLIENT_ID`` alone names a user-assigned one), else the Azure CLI's login."""
    import os

    from azure.identity import (
        AzureCliCredential,
        ChainedTokenCredential,
        ClientSecretCredential,
        EnvironmentCredential,
        ManagedIdentityCredential,
    )

    if client_id and client_secret:
        return ClientSecretCredential(tenant_id, client_id, client_secret)
    return ChainedTokenCredential(
        EnvironmentCredential(),
        ManagedIdentityCredential(client_id=os.environ.get("AZURE_CLIENT_ID") or None),
        AzureCliCredential(tenant_id=tenant_id),
    )


__all__ = ["Arm", "ArmError", "Response", "default_credential", "fail"]
