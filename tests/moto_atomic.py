"""moto's server, with DynamoDB requests applied one at a time as DynamoDB applies them.

moto checks a ConditionExpression and then writes with no lock between the two, so two
threads of its server can both pass the same condition (two winners of one step claim).
DynamoDB makes every conditional write and transaction atomic; this entry point restores that
by serializing moto's DynamoDB handler. Other services stay concurrent (SQS long polls).

Run as ``python tests/moto_atomic.py -H host -p port`` (the arguments of ``moto.server``).
"""

from __future__ import annotations

import threading
from typing import Any

from moto.dynamodb.responses import DynamoHandler
from moto.server import main

_ONE_AT_A_TIME = threading.Lock()
_call_action = DynamoHandler.call_action


def _serialized(self: DynamoHandler) -> Any:
    with _ONE_AT_A_TIME:
        return _call_action(self)


DynamoHandler.call_action = _serialized  # type: ignore[method-assign]

if __name__ == "__main__":
    main()
