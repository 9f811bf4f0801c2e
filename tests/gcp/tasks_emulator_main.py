"""Run gcloud-tasks-emulator on loopback: ``python tasks_emulator_main.py PORT``.

The emulator hard-codes ``[::]:PORT`` (every interface); the test stand-ins bind loopback
only, so its gRPC server's ``add_insecure_port`` is given ``127.0.0.1`` instead
(../shared/reference/test-stand-ins.md, "Small launchers that were needed").
"""

from __future__ import annotations

import sys

import grpc._server

_real = grpc._server._Server.add_insecure_port  # noqa: SLF001


def _loopback(self: object, address: str) -> int:
    return int(_real(self, address.replace("[::]", "127.0.0.1")))  # type: ignore[arg-type]


grpc._server._Server.add_insecure_port = _loopback  # type: ignore[method-assign]  # noqa: SLF001

if __name__ == "__main__":
    from gcloud_tasks_emulator.__main__ import main

    sys.argv = [sys.argv[0], "start", "-p", sys.argv[1], "-q"]
    main()
