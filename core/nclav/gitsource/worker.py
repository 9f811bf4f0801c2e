"""Control messages on the work queue: the git source's work, done by a worker.

The queue carries step messages (``{run_id, step_id}``, for ``Engine.handle``) and, since the
git source, control messages with a ``kind``. A runtime's message handler calls ``dispatch``
first; it returns True when the message was a control message (handled here), so the
handler passes only step messages to the engine. An exception propagates: the runtime's
delivery policy sends the message again later, as for a step.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from nclav.gitsource.settings import KINDS

if TYPE_CHECKING:
    from collections.abc import Mapping

    from nclav.gitsource.source import GitSource

logger = logging.getLogger(__name__)


def dispatch(message: Mapping[str, str], git: GitSource | None) -> bool:
    """Handle ``message`` if it is a control message; False for a step message."""
    kind = message.get("kind")
    if kind is None:
        return False
    if kind not in KINDS:
        logger.warning("control message of unknown kind %r dropped", kind)
    elif git is None:
        logger.warning("%s message dropped: this runtime has no git source", kind)
    else:
        git.handle(dict(message))
    return True


__all__ = ["KINDS", "dispatch"]
