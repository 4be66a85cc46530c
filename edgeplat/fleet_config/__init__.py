"""Desired device state from the GitOps repository's ``fleet/`` tree (layers, schemas, traceability)."""
