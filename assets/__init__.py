"""Dagster assets and asset checks, one package per domain."""
