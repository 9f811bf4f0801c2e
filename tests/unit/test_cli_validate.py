"""`nclav validate DIR`: offline, one summary line or one line per error, exit 0 or 2."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from click.testing import CliRunner

from nclav.cli import main
from support import EXAMPLES, SEED, write_tree

if TYPE_CHECKING:
    from pathlib import Path

# Two errors in two files: an unknown key (enclave) and an auth the type does not take.
BROKEN = {
    **SEED,
    "product-a/dev/config.yml": SEED["product-a/dev/config.yml"]
    .replace("region: local-1", "region: local-1\nregoin: x")
    .replace("auth: token", "auth: native"),
}


def validate(*args: str):  # noqa: ANN201 - click's Result
    return CliRunner().invoke(main, ["validate", *args])


def test_valid_tree(tmp_path: Path) -> None:
    root = write_tree(tmp_path, SEED)
    result = validate(str(root))
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        f"valid: 1 enclave(s), 2 partition(s), 2 export(s), 1 import(s) in {root}\n"
    )
    assert result.stderr == ""


def test_valid_examples() -> None:
    result = validate(str(EXAMPLES / "product-a" / "enclaves"))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("valid: 2 enclave(s), 3 partition(s), 2 export(s), 2 import(s)")
    assert len(result.stdout.splitlines()) == 1


def test_invalid_tree_lists_every_error(tmp_path: Path) -> None:
    root = write_tree(tmp_path, BROKEN)
    result = validate(str(root))
    assert result.exit_code == 2
    assert result.stdout == ""
    where = f"{root}/product-a/dev/config.yml"
    assert result.stderr.splitlines() == [
        f"{where}:5: regoin: unknown key 'regoin' (did you mean 'region'?)",
        f"{where}:11: exports[0].auth: incompatible auth: export 'api-http' has type http "
        "but auth native; http exports take: mtls, none, oauth, token",
        f"2 error(s) in {root}",
    ]


def test_graph_errors_are_reported_as_path_line_field_message(tmp_path: Path) -> None:
    files = dict(BROKEN)
    files["product-a/dev/config.yml"] = (
        SEED["product-a/dev/config.yml"]
        .replace("auth: token", "auth: native")
        .replace("to: { enclave: product-a-dev }", "to: { enclave: x }")
    )
    root = write_tree(tmp_path, files)
    result = validate(str(root))
    assert result.exit_code == 2
    where = f"{root}/product-a/dev/config.yml"
    assert result.stderr.splitlines() == [
        f"{where}:10: exports[0].auth: incompatible auth: export 'api-http' has type http but "
        "auth native; http exports take: mtls, none, oauth, token",
        f"{where}:16: imports[0]: access denied: export 'db-tcp' of 'product-a-dev' does not "
        "admit enclave 'product-a-dev' (to: {enclave: x})",
        f"2 error(s) in {root}",
    ]


def test_json_output_when_valid(tmp_path: Path) -> None:
    result = validate(str(write_tree(tmp_path, SEED)), "--output", "json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {
        "valid": True,
        "errors": [],
        "counts": {"enclaves": 1, "partitions": 2, "exports": 2, "imports": 1},
    }


def test_json_output_when_invalid(tmp_path: Path) -> None:
    root = write_tree(tmp_path, BROKEN)
    result = validate(str(root), "--output", "json")
    assert result.exit_code == 2
    doc = json.loads(result.stdout)
    assert doc == {
        "valid": False,
        "errors": [
            {
                "path": f"{root}/product-a/dev/config.yml",
                "line": 5,
                "field": "regoin",
                "message": "unknown key 'regoin' (did you mean 'region'?)",
            },
            {
                "path": f"{root}/product-a/dev/config.yml",
                "line": 11,
                "field": "exports[0].auth",
                "message": "incompatible auth: export 'api-http' has type http but auth "
                "native; http exports take: mtls, none, oauth, token",
            },
        ],
    }


def test_missing_directory(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    result = validate(str(missing))
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"{missing}: enclaves directory does not exist",
        f"1 error(s) in {missing}",
    ]


def test_missing_directory_json(tmp_path: Path) -> None:
    result = validate(str(tmp_path / "nope"), "--output", "json")
    assert result.exit_code == 2
    (error,) = json.loads(result.stdout)["errors"]
    assert error == {
        "path": str(tmp_path / "nope"),
        "line": None,
        "field": "",
        "message": "enclaves directory does not exist",
    }


def test_default_cloud_option_decides_cloud_tokens(tmp_path: Path) -> None:
    files = dict(SEED)
    files["product-a/dev/config.yml"] = files["product-a/dev/config.yml"].replace(
        "cloud: local\n", ""
    )
    files["product-a/dev/db/config.yml"] = SEED["product-a/dev/db/config.yml"].replace(
        "engine: postgres", "engine: postgres\n  account: '{{ nclav_account_id }}'"
    )
    root = write_tree(tmp_path, files)
    assert validate(str(root), "--default-cloud", "aws").exit_code == 0
    result = validate(str(root), "--default-cloud", "gcp")
    assert result.exit_code == 2
    assert (
        "db/config.yml:6: inputs.account: unknown token '{{ nclav_account_id }}'" in result.stderr
    )


def test_unknown_option_value_is_a_usage_error(tmp_path: Path) -> None:
    result = validate(str(tmp_path), "--output", "yaml")
    assert result.exit_code == 2
    assert "Invalid value for '--output'" in result.stderr
