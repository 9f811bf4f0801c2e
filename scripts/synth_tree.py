"""Generate a synthetic enclaves tree: N enclaves x M partitions, with import chains.

Enclave i exports its partition p0 as `api` (http) and, unless it starts a chain, imports the
`api` export of enclave i-1 as `up`; p0 reads `{{ up.hostname }}`, so every chain of
``chain`` enclaves is a dependency chain through their p0 partitions. Inside an enclave,
p1..pM-1 read p0's outputs through the enclave's own `self` import.
"""

from __future__ import annotations

import argparse
import os

ENCLAVE = """id: e{i:04d}
name: Synthetic enclave {i}
cloud: local
region: local-1
network:
  vpc_cidr: "10.{hi}.{lo}.0/24"
  subnets: ["10.{hi}.{lo}.0/26", "10.{hi}.{lo}.64/26"]
exports:
  - name: api
    target_partition: p0
    type: http
    to: any_enclave
    auth: token
  - name: self
    target_partition: p0
    type: http
    to: {{enclave: e{i:04d}}}
imports:
  - from: e{i:04d}
    export_name: self
    alias: self
{upstream}"""

UPSTREAM = """  - from: e{prev:04d}
    export_name: api
    alias: up
"""

HEAD = """id: p{k}
name: Partition {k}
backend: terraform
"""

P0 = (
    HEAD
    + """produces: http
inputs:
  enclave: "{{{{ nclav_enclave_id }}}}"
  upstream: "{upstream}"
  replicas: 3
declared_outputs: [hostname, port]
"""
)

PN = (
    HEAD
    + """inputs:
  api: "{{{{ self.hostname }}}}:{{{{ self.port }}}}"
  size: {k}
declared_outputs: [id]
"""
)

MAIN_TF = """variable "nclav_enclave" {{ type = string }}
variable "nclav_partition" {{ type = string }}
resource "terraform_data" "p{k}" {{
  input = "${{var.nclav_enclave}}-${{var.nclav_partition}}"
}}
output "{out}" {{ value = terraform_data.p{k}.output }}
"""


def write_tree(root: str, enclaves: int = 1000, partitions: int = 10, chain: int = 10) -> None:
    for i in range(enclaves):
        edir = os.path.join(root, f"group{i // chain:03d}", f"e{i:04d}")
        os.makedirs(edir, exist_ok=True)
        starts_chain = i % chain == 0
        upstream = "" if starts_chain else UPSTREAM.format(prev=i - 1)
        with open(os.path.join(edir, "config.yml"), "w") as fh:
            fh.write(ENCLAVE.format(i=i, hi=i // 256, lo=i % 256, upstream=upstream))
        for k in range(partitions):
            pdir = os.path.join(edir, f"p{k}")
            os.makedirs(pdir, exist_ok=True)
            if k == 0:
                up = "none" if starts_chain else "{{ up.hostname }}"
                config, out = P0.format(k=k, upstream=up), "hostname"
            else:
                config, out = PN.format(k=k), "id"
            with open(os.path.join(pdir, "config.yml"), "w") as fh:
                fh.write(config)
            tf = MAIN_TF.format(k=k, out=out)
            if k == 0:
                tf += 'output "port" { value = 443 }\n'
            with open(os.path.join(pdir, "main.tf"), "w") as fh:
                fh.write(tf)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("root")
    parser.add_argument("--enclaves", type=int, default=1000)
    parser.add_argument("--partitions", type=int, default=10)
    args = parser.parse_args()
    write_tree(args.root, args.enclaves, args.partitions)


if __name__ == "__main__":
    main()
