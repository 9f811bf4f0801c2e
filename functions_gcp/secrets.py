"""``SecretManagerSecretStore``: nclav's secrets (API token, webhook secrets) in Secret Manager.

A secret ``name`` is the Secret Manager secret ``projects/<project>/secrets/<prefix><name>``,
its value the latest version's payload (UTF-8), unchanged, so the deployment (infra/gcp) and
an operator can create or rotate the same secrets with gcloud. ``put`` adds a version to the
secret and creates the secret (automatic replication, label ``nclav-managed=true``) when it
does not exist; earlier versions stay, as Secret Manager keeps them, for recovery.

Secret ids allow letters, digits, ``-`` and ``_`` only, while nclav's names may also hold
``.``: a name is used as is unless it has ``.`` or ``_``, which are written ``_2E`` and
``_5F`` (so ``webhook.github`` is ``nclav-webhook_2Egithub``; names without them, all of
nclav's own, read the same in both places).

It speaks Secret Manager v1 REST through google-auth's ``AuthorizedSession`` (``_rest``):
cheap to import and no gRPC. ``endpoint`` replaces ``https://secretmanager.googleapis.com/``
(tests point it at a local fake).
"""

from __future__ import annotations

import base64
import re
from typing import TYPE_CHECKING, Any

from functions_gcp._rest import Rest
from nclav.errors import Issue, SpecError, TemporaryError
from nclav.naming import MANAGED
from nclav.ports import check_secret_name

API = "secretmanager"
_PREFIX = re.compile(r"^[A-Za-z0-9_-]*$")


def secret_id(prefix: str, name: str) -> str:
    """The Secret Manager secret id of ``name`` (reversible: ``.`` and ``_`` escaped)."""
    escaped = check_secret_name(name).replace("_", "_5F").replace(".", "_2E")
    return prefix + escaped


class SecretManagerSecretStore:
    def __init__(
        self,
        project: str,
        prefix: str = "nclav-",
        *,
        session: Any | None = None,
        endpoint: str | None = None,
    ) -> None:
        if not project:
            raise SpecError([Issue("project", None, "", "a Google Cloud project id is required")])
        if not _PREFIX.fullmatch(prefix):
            raise SpecError(
                [Issue("prefix", None, "", f"{prefix!r}: letters, digits, '-' and '_' only")]
            )
        self.project = project
        self.prefix = prefix
        self._rest = Rest(session, {API: endpoint} if endpoint else None)

    def _path(self, name: str) -> str:
        return f"v1/projects/{self.project}/secrets/{secret_id(self.prefix, name)}"

    def get(self, name: str) -> str | None:
        path = self._path(name)
        reply = self._rest.call(
            "GET",
            API,
            f"{path}/versions/latest:access",
            f"secretmanager access {path}",
            expect=(404,),
        )
        if reply.status == 404:  # no such secret, or no version yet
            return None
        data = base64.b64decode(reply.body.get("payload", {}).get("data", ""))
        return data.decode("utf-8")

    def put(self, name: str, value: str) -> None:
        path = self._path(name)
        if not value:
            raise SpecError(
                [Issue(path=repr(name), line=None, field="", message="a secret cannot be empty")]
            )
        if self._add_version(path, value):
            return
        self._rest.call(
            "POST",
            API,
            f"v1/projects/{self.project}/secrets",
            f"secretmanager create {path}",
            params={"secretId": secret_id(self.prefix, name)},
            body={"replication": {"automatic": {}}, "labels": {MANAGED: "true"}},
            expect=(409,),  # another process created it since: add the version to that one
        )
        if not self._add_version(path, value):  # deleted again in between
            raise TemporaryError(f"secretmanager {path}: deleted while being written")

    def _add_version(self, path: str, value: str) -> bool:
        """Add the value as the newest version; False when the secret does not exist."""
        data = base64.b64encode(value.encode("utf-8")).decode("ascii")
        reply = self._rest.call(
            "POST",
            API,
            f"{path}:addVersion",
            f"secretmanager addVersion {path}",
            body={"payload": {"data": data}},
            expect=(404,),
        )
        return reply.status != 404


if TYPE_CHECKING:
    from nclav.ports import SecretStore

    def _implements(
        adapter: SecretManagerSecretStore,
    ) -> SecretStore:  # mypy proves the port is implemented
        return adapter


__all__ = ["SecretManagerSecretStore", "secret_id"]
