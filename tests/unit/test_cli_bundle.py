"""What `nclav diff` / `nclav apply` upload: the bundle the CLI packs before any request.

A broken tree never reaches the network: these tests point the CLI at a closed port and
expect exit 2, not exit 3.
"""

from __future__ import annotations

import os
import shutil
import socket
from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner

from nclav.bundle import unpack
from nclav.cli import main
from nclav.cli.common import EXIT_INVALID, InvalidError
from nclav.cli.reconcile import pack
from support import EXAMPLES, enclave_files, write_tree

if TYPE_CHECKING:
    from pathlib import Path

    from click.testing import Result

PRODUCT_A = EXAMPLES / "product-a" / "enclaves"


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def nclav(*args: str) -> Result:
    env = {"NCLAV_URL": closed_port_url(), "NCLAV_TOKEN": "x" * 64, "NCLAV_HOME": None}
    return CliRunner().invoke(main, list(args), env=env)


def test_same_tree_same_digest_from_any_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = tmp_path / "tree"
    shutil.copytree(PRODUCT_A, tree)
    elsewhere = tmp_path / "a" / "b"
    elsewhere.mkdir(parents=True)
    found = set()
    for cwd, spelling in [
        (tmp_path, "tree"),
        (tmp_path, "./tree/"),
        (elsewhere, "../../tree"),
        (elsewhere, str(tree)),
        (tree, "."),
    ]:
        monkeypatch.chdir(cwd)
        found.add(pack(spelling))
    assert len(found) == 1
    (digest, data) = found.pop()
    assert len(digest) == 64 and data.startswith(b"\x1f\x8b")


def test_ignored_files_are_really_ignored(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "tree", enclave_files("team/dev", p=""))
    digest, data = pack(str(root))
    write_tree(
        root,
        {
            "team/dev/p/.terraform/providers/provider.bin": b"\x7fELF",
            "team/dev/p/.terraform.lock.hcl": "",
            "team/dev/p/terraform.tfstate": '{"serial": 1}',
            "team/dev/p/terraform.tfstate.backup": "{}",
            "team/dev/p/.env": "TOKEN=secret",
            "team/dev/.hidden/config.yml": "id: x\n",
            "team/README.md": "not part of the tree",
            ".git/config": "",
        },
    )
    again, packed = pack(str(root))
    assert again == digest
    assert sorted(unpack(packed)) == [
        "team/dev/config.yml",
        "team/dev/p/config.yml",
        "team/dev/p/main.tf",
    ]
    (root / "team/dev/p/main.tf").write_text('variable "x" {}\n')
    assert pack(str(root))[0] != digest


def test_symlink_out_of_the_tree_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    outside = write_tree(tmp_path / "outside", {"secret.tf": "password = 1\n"})
    root = write_tree(tmp_path / "tree", enclave_files("e", p=""))
    os.symlink(outside / "secret.tf", root / "e" / "p" / "secret.tf")
    with pytest.raises(InvalidError):
        pack(str(root))
    for command in ("diff", "apply"):
        result = nclav(command, str(root))
        assert result.exit_code == EXIT_INVALID, result.output
        assert result.stdout == ""
        assert result.stderr.splitlines() == [
            f"{root}/e/p/secret.tf: symbolic link points outside the enclaves directory",
            f"1 error(s) in {root}",
        ]


def test_invalid_yaml_is_exit_2_with_file_and_line_before_any_request(tmp_path: Path) -> None:
    files = enclave_files("e", p="")
    files["e/p/config.yml"] = "id: p\nname: [unclosed\n"
    root = write_tree(tmp_path / "tree", files)
    result = nclav("diff", str(root))
    assert result.exit_code == EXIT_INVALID
    first = result.stderr.splitlines()[0]
    assert first.startswith(f"{root}/e/p/config.yml:")
    assert first.split(":")[1].isdigit()  # the line number
    assert result.stderr.splitlines()[-1] == f"1 error(s) in {root}"


def test_missing_directory_is_exit_2(tmp_path: Path) -> None:
    result = nclav("apply", str(tmp_path / "nope"))
    assert result.exit_code == EXIT_INVALID
    assert result.stderr.splitlines() == [
        f"{tmp_path / 'nope'}: enclaves directory does not exist",
        f"1 error(s) in {tmp_path / 'nope'}",
    ]
