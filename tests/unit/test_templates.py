"""`{{ token }}` parsing, rendering and input resolution."""

from __future__ import annotations

import pytest

from nclav.model import Cloud
from nclav.templates import (
    ALL_TOKENS,
    CLOUD_TOKENS,
    COMMON_TOKENS,
    TemplateSyntaxError,
    Token,
    render,
    resolve_inputs,
    tokens,
)


def test_tokens_left_to_right_with_whitespace_trimmed() -> None:
    found = list(tokens("a {{ x }} b {{y.z}} c {{  nclav_region  }}"))
    assert [(t.text, t.name, t.alias, t.key) for t in found] == [
        ("{{ x }}", "x", None, "x"),
        ("{{y.z}}", "y.z", "y", "z"),
        ("{{  nclav_region  }}", "nclav_region", None, "nclav_region"),
    ]


def test_key_keeps_everything_after_the_first_dot() -> None:
    (token,) = tokens("{{ db.a.b }}")
    assert (token.alias, token.key) == ("db", "a.b")


@pytest.mark.parametrize("value", ["", "plain text", "a } b", "{ x }", "}} then {"])
def test_no_tokens(value: str) -> None:
    assert list(tokens(value)) == []
    assert render(value, lambda t: "X") == (value, [])


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{{ x", "'{{' at offset 0 is never closed with '}}'"),
        ("ok {{ x }} then {{ y", "'{{' at offset 16 is never closed"),
        ("{{}}", "empty token '{{}}'"),
        ("{{   }}", "empty token '{{   }}'"),
        ("{{ a b }}", "malformed token '{{ a b }}'"),
        ("{{ .key }}", "malformed token '{{ .key }}'"),
        ("{{ alias. }}", "malformed token '{{ alias. }}'"),
    ],
)
def test_syntax_errors(value: str, message: str) -> None:
    with pytest.raises(TemplateSyntaxError) as caught:
        list(tokens(value))
    assert message in str(caught.value)


def test_render_substitutes_left_to_right_keeping_surrounding_text() -> None:
    values = {"a": "1", "b.c": "2"}
    text, missing = render("<{{ a }}|{{b.c}}|{{ a }}>", lambda t: values.get(t.name))
    assert (text, missing) == ("<1|2|1>", [])


def test_render_does_not_rescan_resolved_values() -> None:
    values = {"a": "{{ b }}", "b": "NO"}
    text, missing = render("{{ a }}-{{ b }}", lambda t: values.get(t.name))
    assert (text, missing) == ("{{ b }}-NO", [])


def test_render_keeps_unresolved_tokens_verbatim_and_reports_them() -> None:
    text, missing = render(
        "x={{ known }} y={{ gone.key }}", lambda t: "K" if t.name == "known" else None
    )
    assert text == "x=K y={{ gone.key }}"
    assert missing == [Token("{{ gone.key }}", "gone.key")]


def test_render_of_the_same_token_text_twice_with_different_results() -> None:
    answers = iter(["first", "second"])
    text, _ = render("{{ n }} and {{ n }}", lambda t: next(answers))
    assert text == "first and second"


def test_render_raises_on_bad_syntax() -> None:
    with pytest.raises(TemplateSyntaxError):
        render("{{ a }} {{", lambda t: "x")


def test_resolve_inputs_context_and_outputs() -> None:
    asked: list[tuple[str, str]] = []

    def outputs(alias: str, key: str) -> str | None:
        asked.append((alias, key))
        return {("db", "hostname"): "db.local", ("db", "port"): "5432"}.get((alias, key))

    resolved, problems = resolve_inputs(
        {"url": "pg://{{ db.hostname }}:{{ db.port }}/{{ nclav_enclave_id }}", "plain": "5"},
        {"nclav_enclave_id": "dev", "nclav_region": ""},
        outputs,
    )
    assert resolved == {"url": "pg://db.local:5432/dev", "plain": "5"}
    assert problems == []
    assert asked == [("db", "hostname"), ("db", "port")]


def test_resolve_inputs_empty_context_value_is_resolved() -> None:
    resolved, problems = resolve_inputs(
        {"r": "[{{ nclav_region }}]"}, {"nclav_region": ""}, lambda a, k: None
    )
    assert (resolved, problems) == ({"r": "[]"}, [])


def test_resolve_inputs_lists_every_unresolved_token() -> None:
    resolved, problems = resolve_inputs(
        {"a": "{{ nclav_project_id }}", "b": "{{ db.hostname }}/{{ db.port }}", "c": "ok"},
        {},
        lambda alias, key: "h" if key == "hostname" else None,
    )
    assert resolved == {"a": "{{ nclav_project_id }}", "b": "h/{{ db.port }}", "c": "ok"}
    assert problems == [
        "input 'a': cannot resolve '{{ nclav_project_id }}'",
        "input 'b': cannot resolve '{{ db.port }}'",
    ]


def test_token_sets() -> None:
    assert {
        "nclav_enclave_id",
        "nclav_partition_id",
        "nclav_project_id",
        "nclav_region",
    } == COMMON_TOKENS
    assert CLOUD_TOKENS[Cloud.LOCAL] == CLOUD_TOKENS[Cloud.GCP] == frozenset()
    assert "nclav_account_id" in CLOUD_TOKENS[Cloud.AWS]
    assert "nclav_subscription_id" in CLOUD_TOKENS[Cloud.AZURE]
    assert COMMON_TOKENS | CLOUD_TOKENS[Cloud.AWS] | CLOUD_TOKENS[Cloud.AZURE] == ALL_TOKENS
