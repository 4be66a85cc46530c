"""Operator-side security provisioning: tenant-scoped object-store credentials, their checker,
and one-step device revocation.

Domain code, free of Dagster: the CLI (``edgeplat security``, ``edgeplat device``) and tests
call it directly. Device-side counterparts live in ``edge_sync`` (``edge_sync.storage_credentials``).
"""
