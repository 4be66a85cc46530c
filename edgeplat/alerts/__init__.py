"""Alert rules and notifications: conditions on the lakehouse and live rows, sent to each tenant's sinks."""
