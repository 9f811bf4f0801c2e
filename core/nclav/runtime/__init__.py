"""The runtime kit: everything a runtime needs that does not depend on its cloud.

A runtime (local, AWS, ...) writes adapters for the five ports, translates its queue records
into ``Delivery`` and applies the ``Outcome``, translates its HTTP events into ``ApiRequest``,
names its resources in settings, and calls ``compose``. The rest is here:

* ``timing``: ``backoff`` and ``heartbeat`` (imported here: the engine and the stores use them);
* ``delivery``: the delivery policy (``Ack | Retry | GaveUp``) and the shell calling the engine;
* ``routing``: ``RoutedQueue``, terraform steps to their own queue;
* ``settings``: ``Settings.from_env`` (``NCLAV_*``), which a cloud extends with its names;
* ``drivers``: driver plugins (``nclav.drivers`` entry points) with their declared options;
* ``compose``: the one function that builds engine, service, router and IaC runner;
* ``handlers``: the HTTP trigger plumbing (500 with the request id, 400 for a bad event,
  ``/health`` without a runtime);
* ``logs``: a stdlib JSON log formatter;
* ``hosted`` and ``parts``: a function runtime's bootstrap, every part built on first use;
  ``git``, ``token`` and ``schedule``: its git source, API token and scheduled tick;
* ``stores``: what every state store adapter shares (records as stored, the lease rules).

Only ``timing`` is imported with the package, so the engine and the stores can use it
without importing the rest (which imports the engine).
"""

from __future__ import annotations

from nclav.runtime.timing import backoff, heartbeat

__all__ = ["backoff", "heartbeat"]
