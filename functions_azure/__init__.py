"""nclav's Azure runtime: the core's ports on Azure services (see README.md for what exists)."""
