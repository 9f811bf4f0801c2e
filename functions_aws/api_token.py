"""The API token on AWS: core's ``StoredToken`` (``nclav.runtime.token``) in Secrets Manager.

The first version is written with a fixed ``ClientRequestToken``: Secrets Manager accepts
exactly one first version under that request token, so two cold sandboxes racing each other
cannot both win; the loser reads the winner's token. The operator reads it with
``aws secretsmanager get-secret-value`` and rotates it with ``put-secret-value``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from functions_aws._errors import aws_errors
from nclav.runtime.token import TTL_S, StoredToken

if TYPE_CHECKING:
    from collections.abc import Callable

    from functions_aws.secrets import SecretsManagerSecretStore

# The request token of the first version: idempotent, so only one generated token ever lands.
FIRST_VERSION = "nclav-first-api-token-0000000000000"


class ApiToken(StoredToken):
    def __init__(
        self,
        store: SecretsManagerSecretStore,
        name: str = "api-token",
        *,
        ttl_s: float = TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        secret_id = store.prefix + name

        def write_first(token: str) -> None:
            with aws_errors(f"secretsmanager:PutSecretValue {secret_id}"):
                store.client.put_secret_value(
                    SecretId=secret_id, SecretString=token, ClientRequestToken=FIRST_VERSION
                )

        super().__init__(store, name, ttl_s=ttl_s, clock=clock, write_first=write_first)


__all__ = ["FIRST_VERSION", "TTL_S", "ApiToken"]
