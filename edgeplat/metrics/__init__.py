"""Fleet and platform figures for Prometheus, read from the lakehouse and the rollout record.

``catalog`` names every metric (the contract dashboards and rules are checked against),
``fleet``, ``rollouts`` and ``notifications`` query the lakehouse into readings, and
``collector`` serves them to ``prometheus_client`` with a bounded refresh cost. No Dagster here:
the HTTP server is the ``edgeplat metrics serve`` entry point (cli/metrics.py).
"""
