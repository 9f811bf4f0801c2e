"""``{{ token }}`` templates in partition ``inputs:``.

A token is either a context value (``nclav_enclave_id``, ``nclav_region``, ...) or
``alias.key``: the output ``key`` of the partition behind the export that the enclave imports
as ``alias``. Text outside tokens is kept; resolved values are never re-scanned.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from nclav.model import Cloud

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

# Provided by every driver (local: project id and region are empty strings).
COMMON_TOKENS = frozenset(
    {"nclav_enclave_id", "nclav_partition_id", "nclav_project_id", "nclav_region"}
)
# Extra context a cloud driver provides.
CLOUD_TOKENS: dict[Cloud, frozenset[str]] = {
    Cloud.LOCAL: frozenset(),
    Cloud.GCP: frozenset(),
    Cloud.AWS: frozenset({"nclav_account_id", "nclav_role_arn", "nclav_enclave"}),
    Cloud.AZURE: frozenset(
        {
            "nclav_subscription_id",
            "nclav_resource_group",
            "nclav_location",
            "nclav_identity_client_id",
            "nclav_enclave",
        }
    ),
}
ALL_TOKENS = COMMON_TOKENS.union(*CLOUD_TOKENS.values())


class TemplateSyntaxError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Token:
    text: str  # the whole token, braces included, as written
    name: str  # the trimmed inner text

    @property
    def alias(self) -> str | None:
        return self.name.split(".", 1)[0] if "." in self.name else None

    @property
    def key(self) -> str:
        return self.name.split(".", 1)[1] if "." in self.name else self.name


def tokens(value: str) -> Iterator[Token]:
    """Every token of ``value``, left to right. Raises TemplateSyntaxError on a bad one."""
    pos = 0
    while True:
        start = value.find("{{", pos)
        if start < 0:
            return
        end = value.find("}}", start + 2)
        if end < 0:
            raise TemplateSyntaxError(f"'{{{{' at offset {start} is never closed with '}}}}'")
        name = value[start + 2 : end].strip()
        if not name:
            raise TemplateSyntaxError(f"empty token '{value[start : end + 2]}'")
        alias, _, key = name.partition(".")
        if " " in name or (("." in name) and (not alias or not key)):
            raise TemplateSyntaxError(f"malformed token '{value[start : end + 2]}'")
        yield Token(value[start : end + 2], name)
        pos = end + 2


def render(value: str, lookup: Callable[[Token], str | None]) -> tuple[str, list[Token]]:
    """Substitute every token; return the text and the tokens ``lookup`` could not resolve."""
    if "{{" not in value:
        return value, []
    out: list[str] = []
    missing: list[Token] = []
    pos = 0
    for token in tokens(value):
        start = value.index(token.text, pos)
        out.append(value[pos:start])
        resolved = lookup(token)
        if resolved is None:
            missing.append(token)
            out.append(token.text)
        else:
            out.append(resolved)
        pos = start + len(token.text)
    out.append(value[pos:])
    return "".join(out), missing


def resolve_inputs(
    inputs: Mapping[str, str],
    context: Mapping[str, str],
    outputs: Callable[[str, str], str | None],
) -> tuple[dict[str, str], list[str]]:
    """Resolve every input. ``outputs(alias, key)`` answers ``alias.key`` tokens.

    Returns the resolved inputs and one message per token that could not be resolved.
    """

    def lookup(token: Token) -> str | None:
        alias = token.alias
        return context.get(token.name) if alias is None else outputs(alias, token.key)

    resolved: dict[str, str] = {}
    problems: list[str] = []
    for key, value in inputs.items():
        text, missing = render(value, lookup)
        resolved[key] = text
        problems.extend(f"input {key!r}: cannot resolve '{t.text}'" for t in missing)
    return resolved, problems


__all__ = [
    "ALL_TOKENS",
    "CLOUD_TOKENS",
    "COMMON_TOKENS",
    "TemplateSyntaxError",
    "Token",
    "render",
    "resolve_inputs",
    "tokens",
]
