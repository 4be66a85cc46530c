"""The central end of the live MQTT path: verify device messages, keep them in ``live_rows``, evaluate alerts."""
