"""Enclave accounts through AWS Organizations (cloud-drivers-spec §4.4 steps 1-4, §4.5, §4.8).

Idempotency without a stored partial handle (the engine stores a handle only when
provision_enclave returns): an account's name and email are functions of the enclave id, so a
retried step looks for the account by email (ListAccounts), then for a creation still running
under that name (ListCreateAccountStatus), and only then calls CreateAccount. In real AWS a
second CreateAccount with a used email does not fail at once: the request ends FAILED with
EMAIL_ALREADY_EXISTS, so that reason means "look again", not "give up".

Nothing here sleeps: a CreateAccount still running (accounts take 5-15 minutes) is a
``WaitingError`` ("check again in 20 s"), so the step goes back to the queue without using an
attempt, and the next delivery finds the request by name and polls it once more.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from functions_aws.driver.config import (
    AwsDriverConfig,
    account_emails,
    account_name,
    email_pattern,
    tags,
)
from functions_aws.driver.errors import aws_errors, error_code, error_reason
from nclav.errors import PermanentError, TemporaryError, WaitingError

if TYPE_CHECKING:
    from collections.abc import Callable

    from functions_aws.driver.sessions import Sessions

logger = logging.getLogger(__name__)

# A CreateAccount in progress is looked at again this much later (a re-delivery, not a sleep).
CHECK_AGAIN_S = 20.0
CLOSED_STATES = frozenset({"SUSPENDED", "PENDING_CLOSURE", "CLOSED"})
# FailureReasons where a new request can succeed; every other reason is the request's fault
# (limits, invalid email, business validation, payment) and fails the step.
RETRYABLE_FAILURES = frozenset({"CONCURRENT_ACCOUNT_MODIFICATION", "INTERNAL_FAILURE"})
_EMAIL_FAMILY = 20


def account_state(account: dict[str, Any]) -> str:
    """Newer responses carry ``State``; ``Status`` is the deprecated field (spec §4.8)."""
    return str(account.get("State") or account.get("Status") or "")


def _epoch(value: Any) -> float:
    return float(value.timestamp()) if hasattr(value, "timestamp") else 0.0


class Accounts:
    def __init__(
        self,
        config: AwsDriverConfig,
        sessions: Sessions,
        clock: Callable[[], float],
        *,
        close_quota_retry_s: float = 6 * 3600.0,
    ) -> None:
        self.config = config
        # CloseAccount quota hit: retried this much later (the quota is a rolling window).
        self.close_quota_retry_s = close_quota_retry_s
        self.sessions = sessions
        self._clock = clock
        self._known: dict[str, str] = {}  # enclave id -> account id (ids never change)
        # account id -> when it joined the organization (epoch s), where a call told us
        self.joined: dict[str, float] = {}
        self._lock = threading.Lock()

    def _org(self) -> Any:
        return self.sessions.management("organizations", "us-east-1")

    # -- finding -----------------------------------------------------------------------

    def _list_accounts(self, parent: str | None = None) -> list[dict[str, Any]]:
        # ListAccounts pages hold 20 accounts: the OU alone is far cheaper when it will do.
        operation = "list_accounts_for_parent" if parent else "list_accounts"
        kwargs = {"ParentId": parent} if parent else {}
        with aws_errors(f"organizations:{operation}"):
            pages = self._org().get_paginator(operation).paginate(**kwargs)
            return [a for page in pages for a in page.get("Accounts", [])]

    def _match(self, enclave_id: str, accounts: list[dict[str, Any]]) -> dict[str, Any] | None:
        pattern = email_pattern(self.config, enclave_id)
        for account in accounts:
            if pattern.fullmatch(account.get("Email", "")) and (
                account_state(account) not in CLOSED_STATES
            ):
                return account
        return None

    def find(self, enclave_id: str) -> dict[str, Any] | None:
        """The enclave's open account, by its email family: in the OU, else anywhere."""
        found = self._match(enclave_id, self._list_accounts(self.config.org_unit_id))
        return found or self._match(enclave_id, self._list_accounts())

    def account_id(self, enclave_id: str) -> str:
        """The account of an enclave provisioned before (for calls that get no enclave handle).

        The engine hands provision_partition and provision_import the enclave's config but not
        its handle, so the account is looked up by its deterministic email (spec §1.2 FIX: never
        from a partition input that happens to be called nclav_account_id).
        """
        with self._lock:
            known = self._known.get(enclave_id)
        if known:
            return known
        account = self.find(enclave_id)
        if account is None:
            raise PermanentError(f"enclave {enclave_id} has no AWS account (provision it first)")
        return self.remember(enclave_id, str(account["Id"]))

    def remember(self, enclave_id: str, account_id: str) -> str:
        with self._lock:
            self._known[enclave_id] = account_id
        return account_id

    def _in_progress(self, name: str) -> str | None:
        with aws_errors("organizations:ListCreateAccountStatus"):
            pages = (
                self._org()
                .get_paginator("list_create_account_status")
                .paginate(States=["IN_PROGRESS"])
            )
            for page in pages:
                for status in page.get("CreateAccountStatuses", []):
                    if status.get("AccountName") == name:
                        return str(status["Id"])
        return None

    # -- creating ----------------------------------------------------------------------

    def ensure(self, enclave_id: str) -> tuple[str, str, str]:
        """(account id, account name, email) of the enclave's account, creating it if needed."""
        everyone = self._list_accounts()
        found = self._match(enclave_id, everyone)
        if found is not None:
            account = str(found["Id"])
            self.joined[account] = _epoch(found.get("JoinedTimestamp"))
            return self.remember(enclave_id, account), str(found["Name"]), str(found["Email"])
        name = account_name(self.config, enclave_id)
        request = self._in_progress(name)
        if request is None:
            request = self._create(enclave_id, name, everyone)
        account = self.wait(enclave_id, request)
        described = self.describe(account) or {}
        self.joined[account] = _epoch(described.get("JoinedTimestamp")) or self._clock()
        return self.remember(enclave_id, account), name, str(described.get("Email", ""))

    def _create(self, enclave_id: str, name: str, everyone: list[dict[str, Any]]) -> str:
        used = {str(a.get("Email", "")).lower() for a in everyone}
        free = [e for e in account_emails(self.config, enclave_id, _EMAIL_FAMILY) if e not in used]
        if not free:
            raise PermanentError(f"enclave {enclave_id}: every account email of its family is used")
        with aws_errors(f"organizations:CreateAccount {name}"):
            out = self._org().create_account(AccountName=name, Email=free[0], Tags=tags(enclave_id))
        request = str(out["CreateAccountStatus"]["Id"])
        logger.info("enclave %s: CreateAccount %s requested (%s)", enclave_id, name, request)
        return request

    def wait(self, enclave_id: str, request_id: str) -> str:
        """Look at the request once: done, failed, or ``WaitingError`` (check again later).

        The next delivery finds the same request with ListCreateAccountStatus and looks again,
        however long AWS takes, without using up the step's attempts or sleeping in a worker.
        """
        with aws_errors("organizations:DescribeCreateAccountStatus"):
            status = self._org().describe_create_account_status(CreateAccountRequestId=request_id)[
                "CreateAccountStatus"
            ]
        state = status.get("State")
        if state == "SUCCEEDED":
            return str(status["AccountId"])
        if state == "FAILED":
            return self._failed(enclave_id, request_id, str(status.get("FailureReason", "")))
        raise WaitingError(
            f"enclave {enclave_id}: CreateAccount request {request_id} is still {state} "
            f"(accounts take 5-15 minutes); checking again in {CHECK_AGAIN_S:.0f} s",
            retry_after_s=CHECK_AGAIN_S,
        )

    def _failed(self, enclave_id: str, request_id: str, reason: str) -> str:
        if reason == "EMAIL_ALREADY_EXISTS":
            # Our own earlier request (or a concurrent one) got there first: adopt its account.
            found = self.find(enclave_id)
            if found is not None:
                return str(found["Id"])
            raise PermanentError(
                f"enclave {enclave_id}: CreateAccount failed: EMAIL_ALREADY_EXISTS: the email is "
                "used by an account outside this organization; change --aws-account-prefix or "
                "--aws-email-domain"
            )
        message = f"enclave {enclave_id}: CreateAccount request {request_id} failed: {reason}"
        if reason in RETRYABLE_FAILURES:
            raise TemporaryError(message, retry_after_s=60.0)
        raise PermanentError(message)

    def place(self, account_id: str) -> None:
        """Move the account from wherever it is (the root, after creation) into the OU."""
        ou = self.config.org_unit_id
        with aws_errors(f"organizations:ListParents {account_id}"):
            parents = self._org().list_parents(ChildId=account_id)["Parents"]
        if not parents or parents[0]["Id"] == ou:
            return
        with aws_errors(f"organizations:MoveAccount {account_id} -> {ou}"):
            try:
                self._org().move_account(
                    AccountId=account_id, SourceParentId=parents[0]["Id"], DestinationParentId=ou
                )
            except ClientError as exc:
                # Already moved by an earlier attempt whose answer was lost.
                if error_code(exc) not in (
                    "DuplicateAccountException",
                    "AccountAlreadyInOrganizationException",
                ):
                    raise

    # -- closing and observing ------------------------------------------------------------

    def close(self, enclave_id: str, account_id: str) -> None:
        """CloseAccount, within its quota: a hit quota queues the step instead of failing it.

        Organizations lets an organization close only a share of its accounts per rolling 30
        days (and only a few at a time); both limits lift by themselves, so the teardown is
        retried much later rather than recorded as failed.
        """
        try:
            with aws_errors(f"organizations:CloseAccount {account_id}"):
                try:
                    self._org().close_account(AccountId=account_id)
                except ClientError as exc:
                    code = error_code(exc)
                    if code in ("AccountNotFoundException", "AccountAlreadyClosedException"):
                        return
                    if code == "ConstraintViolationException":
                        self._quota(enclave_id, account_id, exc)
                    raise
        finally:
            with self._lock:
                self._known.pop(enclave_id, None)
            self.sessions.forget(account_id)

    def _quota(self, enclave_id: str, account_id: str, exc: ClientError) -> None:
        reason = error_reason(exc)
        message = str(exc.response.get("Error", {}).get("Message", ""))
        text = f"enclave {enclave_id}: closing account {account_id} is queued: {reason or message}"
        # Queued, not failed: the step waits in the queue without using up its attempts.
        if reason == "CLOSE_ACCOUNT_QUOTA_EXCEEDED" or (not reason and "quota" in message.lower()):
            raise WaitingError(text, retry_after_s=self.close_quota_retry_s) from exc
        if reason == "CLOSE_ACCOUNT_REQUESTS_LIMIT_EXCEEDED":
            raise WaitingError(text, retry_after_s=900.0) from exc

    def describe(self, account_id: str) -> dict[str, Any] | None:
        with aws_errors(f"organizations:DescribeAccount {account_id}"):
            try:
                return dict(self._org().describe_account(AccountId=account_id)["Account"])
            except ClientError as exc:
                if error_code(exc) == "AccountNotFoundException":
                    return None
                raise


__all__ = ["CHECK_AGAIN_S", "Accounts", "account_state"]
