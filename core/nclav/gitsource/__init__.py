"""The git source: a push to the deployment's repository is the apply.

``settings`` (what serve and NCLAV_GIT_* configure), ``fetch`` (dulwich, one commit at depth
1, packed into the usual bundle), ``webhooks`` (verifying and reading push deliveries),
``source`` (``GitSource``: from a push to a run, the poll, commit statuses, previews),
``statuses`` (GitHub and GitLab commit statuses), ``worker`` (control messages on the queue)
and ``api`` (the routes).
"""

from nclav.gitsource.settings import GitSettings

__all__ = ["GitSettings"]
