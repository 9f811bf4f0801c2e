"""``nclav init DIR``: a small, valid enclaves tree to start from.

One enclave on the local cloud with one partition whose Terraform uses only the built-in
``terraform_data`` resource, so ``nclav apply`` works offline, with no cloud account.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from nclav.cli.common import InvalidError, err, out

ENCLAVE_ID = "hello"
PARTITION_ID = "web"

# The files of the tree, relative to DIR.
FILES: dict[str, str] = {
    f"{ENCLAVE_ID}/config.yml": f"""\
# An enclave: an isolated environment (on the local cloud, a directory on the server).
# Editors validate this file with `nclav schema enclave > enclave.schema.json` and a first line
# `# yaml-language-server: $schema=<path to enclave.schema.json>`.
id: {ENCLAVE_ID}
name: Hello
cloud: local
region: local-1

exports:
  - name: web-http
    target_partition: {PARTITION_ID}
    type: http
    to: any_enclave
""",
    f"{ENCLAVE_ID}/{PARTITION_ID}/config.yml": f"""\
# A partition: one Terraform root module applied inside the enclave.
id: {PARTITION_ID}
name: Web
produces: http

inputs:
  greeting: "hello from {{{{ nclav_enclave_id }}}}"

declared_outputs:
  - hostname
  - port
""",
    f"{ENCLAVE_ID}/{PARTITION_ID}/main.tf": """\
# Only built-in resources: this applies offline, with no cloud credentials.
variable "nclav_enclave" { type = string }
variable "nclav_partition" { type = string }
variable "greeting" { type = string }

resource "terraform_data" "web" {
  input = {
    host     = "${var.nclav_enclave}-${var.nclav_partition}.local"
    greeting = var.greeting
  }
}

output "hostname" {
  value = terraform_data.web.output.host
}

output "port" {
  value = "8080"
}
""",
}


@click.command(short_help="Write a small, valid enclaves tree to start from.")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Write into DIR even when it is not empty.")
def init(directory: Path, force: bool) -> None:
    """Write a starter enclaves tree into DIRECTORY (created if needed): one enclave on the
    local cloud and one partition whose main.tf uses only `terraform_data`, so it applies
    offline. Refuses a directory that is not empty unless --force (which overwrites only the
    files it writes).

    \b
    Example:
      nclav init ./enclaves
      nclav validate ./enclaves && nclav apply ./enclaves
    """
    if directory.exists() and not directory.is_dir():
        raise InvalidError(f"{directory} exists and is not a directory")
    try:
        entries = sorted(os.listdir(directory)) if directory.exists() else []
    except OSError as exc:
        raise InvalidError(f"cannot read {directory}: {exc.strerror}") from exc
    if entries and not force:
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise InvalidError(
            f"{directory} is not empty ({shown})",
            hint="Choose an empty or new directory, or pass --force to write into it anyway.",
        )
    written = []
    try:
        for rel, text in FILES.items():
            path = directory / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            written.append(path)
    except OSError as exc:
        raise InvalidError(f"cannot write {directory}: {exc.strerror}") from exc
    for path in written:
        out(str(path))
    err(f"Next: nclav validate {directory} && nclav apply {directory}")


__all__ = ["FILES", "init"]
