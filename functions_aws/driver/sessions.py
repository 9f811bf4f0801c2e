"""Credentials: the management session and the role chain into enclave accounts.

base credentials (boto3's default chain: env, ECS task role, IMDSv2, profile)
  -> ``role_arn`` if configured (Organizations calls and the start of every chain)
  -> ``arn:aws:iam::{enclave account}:role/{cross_account_role}`` (everything in an enclave)
  -> ``nclav-partition-{id}`` (what terraform runs as, see ``AwsDriver.auth_env``)

Assumed credentials are cached per account and replaced ten minutes before they expire;
boto3 sessions are not thread-safe, so sessions and clients are made under one lock (the
clients themselves are thread-safe and shared by the worker threads).

Nothing here sleeps: a role that is not assumable yet (IAM propagation) is a ``WaitingError``
while it is young, and every client carries the runtime's botocore ``Config`` (standard
retries, bounded timeouts) plus a check before each call that the invocation has time left
for it (``time_left``): a call that could outlive the invocation hands the step back to the
queue instead of being killed half-way with the invocation.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from functions_aws.driver.config import SESSION_NAME, AwsDriverConfig, role_arn
from functions_aws.driver.errors import aws_errors, error_code
from nclav.errors import PermanentError, TemporaryError, WaitingError

# Called like ``boto3.Session``: (aws_access_key_id=, aws_secret_access_key=,
# aws_session_token=, region_name=) -> an object with ``client(service, region_name=)``.
SessionFactory = Callable[..., Any]

_REFRESH_S = 600.0
# Role chaining caps every hop at one hour (spec §4.9).
SESSION_S = 3600
# A role younger than this that refuses AssumeRole is still propagating: wait, do not fail.
SETTLE_S = 120.0
# How soon a step whose role or account is not ready yet is delivered again.
CHECK_AGAIN_S = 20.0
# Legacy botocore defaults are 60 s timeouts and 5 legacy-mode attempts: far too long for a
# 60 s worker. Standard mode retries throttling and 5xx with jittered backoff.
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 20.0
MAX_ATTEMPTS = 3  # the first call included
# A call needs at least this much of the invocation left (its timeouts plus a margin).
CALL_RESERVE_S = CONNECT_TIMEOUT_S + 2.0


def client_config(
    *,
    connect_timeout_s: float = CONNECT_TIMEOUT_S,
    read_timeout_s: float = READ_TIMEOUT_S,
    max_attempts: int = MAX_ATTEMPTS,
) -> Config:
    """The botocore settings every driver client gets (the runtime may pass its own)."""
    return Config(
        connect_timeout=connect_timeout_s,
        read_timeout=read_timeout_s,
        retries={"mode": "standard", "total_max_attempts": max_attempts},
    )


@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    secret_access_key: str
    session_token: str
    expires_at: float  # epoch seconds

    @classmethod
    def from_sts(cls, creds: dict[str, Any]) -> Credentials:
        expiration = creds["Expiration"]
        expires = expiration.timestamp() if hasattr(expiration, "timestamp") else float("inf")
        return cls(creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"], expires)

    def session_kwargs(self) -> dict[str, str]:
        return {
            "aws_access_key_id": self.access_key_id,
            "aws_secret_access_key": self.secret_access_key,
            "aws_session_token": self.session_token,
        }


@dataclass
class _Entry:
    session: Any
    credentials: Credentials | None
    clients: dict[tuple[str, str], Any] = field(default_factory=dict)


class Sessions:
    def __init__(
        self,
        config: AwsDriverConfig,
        session_factory: SessionFactory = boto3.Session,
        clock: Callable[[], float] = time.time,
        *,
        botocore_config: Config | None = None,
    ) -> None:
        self.config = config
        self._factory = session_factory
        self._clock = clock
        self._client_config = botocore_config or client_config()
        # Seconds the current invocation has left (None: no limit); set per invocation.
        self.time_left: Callable[[], float | None] = lambda: None
        self._lock = threading.RLock()
        self._entries: dict[str, _Entry] = {}
        self._caller: str | None = None

    # -- the management account ---------------------------------------------------------

    def management(self, service: str, region: str | None = None) -> Any:
        with self._lock:
            return self._client(self._management_entry(), service, region)

    def _management_entry(self) -> _Entry:
        entry = self._entries.get("")
        if entry is not None and self._fresh(entry):
            return entry
        base = self._factory(region_name=self.config.default_region)
        creds = None
        if self.config.role_arn:
            sts = base.client("sts", region_name=self.config.default_region)
            creds = self.assume(sts, self.config.role_arn, "nclav-management")
            base = self._factory(region_name=self.config.default_region, **creds.session_kwargs())
        entry = _Entry(base, creds)
        self._entries[""] = entry
        return entry

    def management_principal(self) -> str:
        """The concrete ARN the management side acts as, for trust policies.

        Real IAM rejects the original's ``arn:aws:iam::*:root`` fallback (spec §4.4 FIX): use
        ``role_arn`` when configured, else the caller, with an STS assumed-role session turned
        into its role's ARN (roles with a path need ``--aws-role-arn``).
        """
        if self.config.role_arn:
            return self.config.role_arn
        with self._lock:
            if self._caller is None:
                with aws_errors("sts:GetCallerIdentity"):
                    arn = str(self.management("sts").get_caller_identity()["Arn"])
                self._caller = principal_for(arn)
            return self._caller

    # -- enclave accounts ----------------------------------------------------------------

    def account(self, account_id: str, service: str, region: str) -> Any:
        """A client acting in ``account_id`` through the cross-account role."""
        with self._lock:
            return self._client(self._account_entry(account_id), service, region)

    def account_credentials(self, account_id: str, settle_until: float = 0.0) -> Credentials:
        """The cross-account role's credentials; until ``settle_until`` (epoch seconds) a
        refusal means a brand-new account whose role is still propagating."""
        with self._lock:
            creds = self._account_entry(account_id, settle_until).credentials
        assert creds is not None
        return creds

    def forget(self, account_id: str) -> None:
        with self._lock:
            self._entries.pop(account_id, None)

    def _account_entry(self, account_id: str, settle_until: float = 0.0) -> _Entry:
        entry = self._entries.get(account_id)
        if entry is not None and self._fresh(entry):
            return entry
        sts = self._client(self._management_entry(), "sts", None)
        arn = role_arn(account_id, self.config.cross_account_role)
        creds = self.assume(sts, arn, SESSION_NAME, settle_until)
        session = self._factory(region_name=self.config.default_region, **creds.session_kwargs())
        entry = _Entry(session, creds)
        self._entries[account_id] = entry
        return entry

    # -- helpers -------------------------------------------------------------------------

    def assume(
        self, sts: Any, arn: str, session_name: str, settle_until: float = 0.0
    ) -> Credentials:
        """AssumeRole, once. AccessDenied from a role that may still be propagating (a
        partition role or a new account's cross-account role, ``settle_until`` in epoch
        seconds: its creation plus ``SETTLE_S``) sends the step back to the queue without
        using up an attempt (``WaitingError``, checked again in ``CHECK_AGAIN_S``); from an
        older role it is temporary (uses an attempt: IAM may be slower than usual), and
        without ``settle_until`` it is permanent (a real denial).
        """
        try:
            with aws_errors(f"sts:AssumeRole {arn}"):
                out = sts.assume_role(
                    RoleArn=arn, RoleSessionName=session_name[:64], DurationSeconds=SESSION_S
                )
            return Credentials.from_sts(out["Credentials"])
        except PermanentError as exc:
            cause = exc.__cause__
            denied = isinstance(cause, ClientError) and error_code(cause) == "AccessDenied"
            if not denied or settle_until <= 0:
                raise
            if self._clock() < settle_until:
                raise WaitingError(
                    f"{exc} (the role is new and IAM is still propagating it; checking again "
                    f"in {CHECK_AGAIN_S:.0f} s)",
                    retry_after_s=CHECK_AGAIN_S,
                ) from cause
            raise TemporaryError(
                f"{exc} (a new role can take a while to become assumable)",
                retry_after_s=30.0,
            ) from cause

    def session_for(self, creds: Credentials, region: str) -> Any:
        with self._lock:
            return self._factory(region_name=region, **creds.session_kwargs())

    def _fresh(self, entry: _Entry) -> bool:
        creds = entry.credentials
        return creds is None or creds.expires_at - self._clock() > _REFRESH_S

    def _client(self, entry: _Entry, service: str, region: str | None) -> Any:
        key = (service, region or self.config.default_region)
        client = entry.clients.get(key)
        if client is None:
            client = entry.session.client(service, region_name=key[1], config=self._client_config)
            client.meta.events.register_first(
                "provide-client-params", self._check_time, unique_id="nclav-time-left"
            )
            entry.clients[key] = client
        return client

    def _check_time(self, model: Any, **_: Any) -> None:
        """Before every call: refuse one the invocation cannot see through (``time_left``)."""
        left = self.time_left()
        if left is not None and left < CALL_RESERVE_S:
            raise TemporaryError(
                f"{model.service_model.service_name}:{model.name}: only {left:.1f} s left in "
                "this invocation; the step goes back to the queue",
                retry_after_s=1.0,
            )


def principal_for(caller_arn: str) -> str:
    """The IAM principal behind a GetCallerIdentity ARN, for a trust policy.

    ``arn:aws:sts::A:assumed-role/R/s`` -> ``arn:aws:iam::A:role/R``; users stay users (in
    IAM's namespace); anything else (federated, root) -> the account root.
    """
    parts = caller_arn.split(":", 5)
    if len(parts) < 6:
        return caller_arn
    partition, account, resource = parts[1], parts[4], parts[5]
    if resource.startswith("assumed-role/"):
        return f"arn:{partition}:iam::{account}:role/{resource.split('/')[1]}"
    if resource.startswith(("user/", "role/")):
        return f"arn:{partition}:iam::{account}:{resource}"
    return f"arn:{partition}:iam::{account}:root"


__all__ = [
    "CHECK_AGAIN_S",
    "SESSION_S",
    "SETTLE_S",
    "Credentials",
    "SessionFactory",
    "Sessions",
    "client_config",
    "principal_for",
]
