"""Sync assets: batch ingest, reconciliation, fleet rollups, SQL views and their checks."""
