"""Progressive rollouts as pure domain logic (no Dagster): the spec, hash-bucket device
selection, statistical health gates, and the event-sourced rollout state machine.

The Dagster assets, sensor and CLI wire these to the lakehouse and the fleet backends.
"""
