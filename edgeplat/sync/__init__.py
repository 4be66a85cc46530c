"""Central sync: exactly-once batch ingest, quarantine, state merge, reconciliation, SQL views.

Plain Python on top of the lakehouse (no Dagster here; assets/sync and pipelines wire it):

- :mod:`edgeplat.sync.env`: what every step needs (lakehouse, store, keys, registry, rules, clock).
- :mod:`edgeplat.sync.arrivals`: the arrival sensor's listing planner (versioned cursor).
- :mod:`edgeplat.sync.queue_arrivals`: the arrival sensor's planner on object-created notifications
  (:mod:`~edgeplat.sync.arrival_queue` and its SQS, Azure storage queue and local journal readers,
  bodies parsed by :mod:`~edgeplat.sync.object_events`), the listing as backstop.
- :mod:`edgeplat.sync.ingest`: verify, decode, quarantine and append batches exactly once.
- :mod:`edgeplat.sync.ledger`: what the ``batches`` ledger and ``quarantine`` already hold.
- :mod:`edgeplat.sync.reconcile`: missed and deferred objects, duplicates, gaps, offline, compaction.
- :mod:`edgeplat.sync.compaction`: DuckLake maintenance, run in a child process that DuckLake may crash.
- :mod:`edgeplat.sync.rollups`: ``devices`` and ``device_health`` from the ingested rows.
- :mod:`edgeplat.sync.central_edits`: central state edits (merge + desired-state downlink).
- :mod:`edgeplat.sync.views`: the analysts' SQL views.
"""
