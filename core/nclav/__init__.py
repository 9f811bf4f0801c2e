"""nclav: GitOps orchestration of isolated cloud environments.

The package is a library first. Its public modules:

* ``nclav.config``: load an enclaves tree from a directory or an uploaded bundle
* ``nclav.graph``: validate the graph of enclaves, partitions, exports and imports
* ``nclav.plan``: the changes and the step DAG that take applied state to the desired tree
* ``nclav.hashing``, ``nclav.templates``, ``nclav.state``, ``nclav.transitions``
* ``nclav.iac``: Terraform / OpenTofu workspaces and runs
* ``nclav.errors``: the exception tree

Nothing heavy is imported here, so ``import nclav.cli`` (every CLI start) stays fast.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
