"""Alert evaluation as an op: the schedule's pass over the lakehouse (edgeplat/alerts)."""
