"""The YAML documents as typed, frozen models.

Field names are the YAML names, with one exception kept from the original's JSON: an export's
``type`` is stored and served as ``export_type`` (both spellings are accepted on input).
Every model forbids unknown keys; the loader turns pydantic's errors into ``Issue``s with the
file, line and a "did you mean" where a known key is close.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, StringConstraints, field_validator

# An id travels in URLs, workspace paths and cloud resource names: no slashes or spaces.
Id = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")]
# An alias is the part before the first dot in {{ alias.key }}, so it cannot hold a dot.
Alias = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_-]{0,62}$")]
# Terraform variable and output names.
TfName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_-]{0,127}$")]

ID_RULE = "1-63 letters, digits, '.', '_' or '-', starting with a letter or digit"
NAME_RULE = "a letter or '_' followed by letters, digits, '_' or '-'"


class Cloud(StrEnum):
    LOCAL = "local"
    GCP = "gcp"
    AZURE = "azure"
    AWS = "aws"


class ExportType(StrEnum):
    HTTP = "http"
    TCP = "tcp"
    QUEUE = "queue"


class Auth(StrEnum):
    NONE = "none"
    TOKEN = "token"
    OAUTH = "oauth"
    MTLS = "mtls"
    NATIVE = "native"


class Backend(StrEnum):
    TERRAFORM = "terraform"
    OPENTOFU = "opentofu"


# Which auth each export type admits (seed README matrix).
AUTH_MATRIX: dict[ExportType, frozenset[Auth]] = {
    ExportType.HTTP: frozenset({Auth.NONE, Auth.TOKEN, Auth.OAUTH, Auth.MTLS}),
    ExportType.TCP: frozenset({Auth.NONE, Auth.MTLS, Auth.NATIVE}),
    ExportType.QUEUE: frozenset({Auth.NONE, Auth.TOKEN, Auth.NATIVE}),
}

# Outputs a partition must declare for what it produces.
REQUIRED_OUTPUTS: dict[ExportType, tuple[str, ...]] = {
    ExportType.HTTP: ("hostname", "port"),
    ExportType.TCP: ("hostname", "port"),
    ExportType.QUEUE: ("queue_url",),
}

_FROZEN = ConfigDict(frozen=True, extra="forbid", populate_by_name=True, defer_build=True)


class Import(BaseModel):
    model_config = _FROZEN

    from_: Id = Field(alias="from")
    export_name: Id
    alias: Alias


class EnclaveTarget(BaseModel):
    model_config = _FROZEN
    enclave: Id


class PartitionTarget(BaseModel):
    """Reserved: parsed and kept, but no import is ever admitted by it."""

    model_config = _FROZEN
    partition: Id


SimpleTarget = Literal["public", "any_enclave", "vpn"]
ExportTarget = SimpleTarget | EnclaveTarget | PartitionTarget


TARGET_RULE = "one of: public, any_enclave, vpn, {enclave: <id>}, {partition: <id>}"
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def check_export_target(value: object) -> object:
    """Validate the shape of an export's ``to:`` with one clear message for every bad form."""
    if isinstance(value, str):
        if value == "any-enclave":
            return "any_enclave"
        if value in ("public", "any_enclave", "vpn"):
            return value
        raise ValueError(f"unknown export target {value!r}: expected {TARGET_RULE}")
    if isinstance(value, EnclaveTarget | PartitionTarget):
        return value
    if isinstance(value, dict) and len(value) == 1:
        ((key, ident),) = value.items()
        if key in ("enclave", "partition") and isinstance(ident, str) and _ID_RE.fullmatch(ident):
            return value
    raise ValueError(f"expected {TARGET_RULE}")


class Export(BaseModel):
    model_config = _FROZEN

    name: Id
    target_partition: Id
    export_type: ExportType = Field(validation_alias=AliasChoices("type", "export_type"))
    to: ExportTarget
    auth: Auth = Auth.NONE
    hostname: str | None = None
    port: Annotated[int, Field(ge=0, le=65535)] | None = None

    @field_validator("to", mode="before")
    @classmethod
    def _check_target(cls, value: object) -> object:
        return check_export_target(value)


class Network(BaseModel):
    model_config = _FROZEN

    vpc_cidr: str | None = None
    subnets: tuple[str, ...] = ()


class Dns(BaseModel):
    model_config = _FROZEN

    zone: str | None = None


class TerraformSettings(BaseModel):
    model_config = _FROZEN

    source: str | None = None
    tool: str | None = None


_DURATION = re.compile(r"^([1-9][0-9]{0,6})([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MIN_DRIFT_INTERVAL_S = 60


class DriftSettings(BaseModel):
    """A partition's ``drift:`` key: how often its drift is checked and whether it is undone.

    ``interval`` is a duration (``30m``, ``1h``, ``6h``, ``1d``; at least a minute) or ``off``;
    unset, the server's ``NCLAV_DRIFT_INTERVAL_S`` applies. These settings do not take part in
    the partition's content hash: changing them never re-applies the partition.
    """

    model_config = _FROZEN

    interval: str | None = None
    remediate: bool = False

    @field_validator("interval")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is None or value == "off":
            return value
        found = _DURATION.fullmatch(value)
        if found is None:
            raise ValueError(
                f"interval {value!r} is not a duration like 30m, 1h, 6h or 1d, nor 'off'"
            )
        if int(found[1]) * _UNIT_S[found[2]] < MIN_DRIFT_INTERVAL_S:
            raise ValueError(f"interval {value!r} is shorter than a minute")
        return value

    def interval_s(self, default_s: float) -> float | None:
        """Seconds between checks (``default_s`` when unset); ``None`` when ``off``."""
        if self.interval is None:
            return default_s
        if self.interval == "off":
            return None
        found = _DURATION.fullmatch(self.interval)
        assert found is not None  # validated
        return float(int(found[1]) * _UNIT_S[found[2]])


# Provider errors that another try usually fixes (matched as case-insensitive regular
# expressions against the failed command's last output lines): throttling, 5xx answers and
# dropped connections, as the AWS, Google and Azure providers print them.
DEFAULT_TRANSIENT_PATTERNS = (
    r"RequestLimitExceeded",
    r"Throttl(ing|ed)",
    r"TooManyRequests|429 Too Many Requests",
    r"Rate exceeded",
    r"SlowDown",
    r"status ?code:? ?5[0-9][0-9]",
    r"(502 Bad Gateway|503 Service Unavailable|504 Gateway Time-?out)",
    r"InternalError|InternalFailure|ServiceUnavailable",
    r"connection reset by peer",
    r"i/o timeout|TLS handshake timeout",
)


class RetrySettings(BaseModel):
    """``retry:`` of a partition: how often a terraform failure whose output matches one of
    ``patterns`` is tried again (as a new attempt of the step), counting the first."""

    model_config = _FROZEN

    max_attempts: int = Field(default=3, ge=1, le=10)
    patterns: tuple[str, ...] = DEFAULT_TRANSIENT_PATTERNS

    @field_validator("patterns")
    @classmethod
    def _compiles(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a regular expression: {exc}") from None
        return patterns


class EnclaveConfig(BaseModel):
    """An enclave's config.yml."""

    model_config = _FROZEN

    id: Id
    name: str
    cloud: Cloud | None = None
    region: str
    identity: str | None = None
    network: Network | None = None
    dns: Dns | None = None
    imports: tuple[Import, ...] = ()
    exports: tuple[Export, ...] = ()
    partitions: tuple[str, ...] = ()


class PartitionConfig(BaseModel):
    """A partition's config.yml."""

    model_config = _FROZEN

    id: Id
    name: str
    produces: ExportType | None = None
    backend: Backend = Backend.TERRAFORM
    terraform: TerraformSettings | None = None
    imports: tuple[Import, ...] = ()
    exports: tuple[Export, ...] = ()
    inputs: dict[TfName, str] = Field(default_factory=dict)
    declared_outputs: tuple[TfName, ...] = ()
    drift: DriftSettings | None = None
    # How transient terraform failures are retried; not part of the partition's hash
    # (changing it re-applies nothing). None: the defaults of RetrySettings.
    retry: RetrySettings | None = None


ENCLAVE_KEYS = frozenset(f.alias or n for n, f in EnclaveConfig.model_fields.items())
PARTITION_KEYS = frozenset(f.alias or n for n, f in PartitionConfig.model_fields.items())

__all__ = [
    "AUTH_MATRIX",
    "ENCLAVE_KEYS",
    "PARTITION_KEYS",
    "REQUIRED_OUTPUTS",
    "Alias",
    "Auth",
    "DEFAULT_TRANSIENT_PATTERNS",
    "Backend",
    "Cloud",
    "Dns",
    "DriftSettings",
    "EnclaveConfig",
    "EnclaveTarget",
    "Export",
    "ExportTarget",
    "ExportType",
    "Id",
    "Import",
    "Network",
    "PartitionConfig",
    "PartitionTarget",
    "RetrySettings",
    "TerraformSettings",
]
