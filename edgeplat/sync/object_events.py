"""Object-created event bodies -> object keys: S3 event notifications and Azure Event Grid events.

Bodies come from the bucket's notification machinery, but anything can be sent to a queue, so
parsing is defensive: a body that is not such an event raises ``PoisonEvent`` with the reason
(the sensor dead-letters it). Events that name no new object (S3's ``s3:TestEvent``, removals, a
key outside the store's prefix) yield no keys and are simply acked. S3 URL-encodes keys in
events (``+`` for a space), so they are decoded with ``unquote_plus``; keys are returned
relative to the store's prefix, as the store lists them.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote_plus

MAX_RECORDS = 1_000  # S3 sends one record per message; more is not an S3 event


class PoisonEvent(ValueError):
    """A queue message that is not a readable object event; the message says why."""


def _json(body: str | bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PoisonEvent(f"body is not JSON ({exc})") from None


def _relative(key: str, prefix: str) -> str | None:
    if not key.startswith(prefix):
        return None
    rest = key[len(prefix) :]
    return rest or None


def keys_from_s3_event(body: str | bytes, *, bucket: str, prefix: str = "") -> tuple[str, ...]:
    """The created object keys (relative to ``prefix``) an S3 event notification body names.

    Also accepts the event wrapped in an SNS notification (S3 -> SNS -> SQS fan-out).
    """
    doc = _json(body)
    if isinstance(doc, dict) and doc.get("Type") == "Notification" and isinstance(doc.get("Message"), str):
        doc = _json(doc["Message"])
    if not isinstance(doc, dict):
        raise PoisonEvent(f"body is JSON {type(doc).__name__}, not an S3 event object")
    if doc.get("Event") == "s3:TestEvent":
        return ()
    records = doc.get("Records")
    if not isinstance(records, list) or not records:
        raise PoisonEvent("body has no 'Records' list: not an S3 event notification")
    if len(records) > MAX_RECORDS:
        raise PoisonEvent(f"body has {len(records)} records, more than {MAX_RECORDS}")
    keys: list[str] = []
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise PoisonEvent(f"record {i} is not an object")
        name = rec.get("eventName")
        if not isinstance(name, str):
            raise PoisonEvent(f"record {i} has no 'eventName'")
        s3 = rec.get("s3")
        obj = s3.get("object") if isinstance(s3, dict) else None
        raw_key = obj.get("key") if isinstance(obj, dict) else None
        rec_bucket = (
            s3.get("bucket", {}).get("name")
            if isinstance(s3, dict) and isinstance(s3.get("bucket"), dict)
            else None
        )
        if not isinstance(raw_key, str) or not raw_key or not isinstance(rec_bucket, str):
            raise PoisonEvent(f"record {i} has no 's3.object.key' or 's3.bucket.name'")
        if rec_bucket != bucket:
            raise PoisonEvent(
                f"record {i} is for bucket {rec_bucket!r}, not {bucket!r}: the queue receives another "
                "bucket's notifications; fix the bucket's notification configuration"
            )
        if not name.startswith("ObjectCreated:"):
            continue
        key = _relative(unquote_plus(raw_key), prefix)
        if key is not None:
            keys.append(key)
    return tuple(keys)


BLOB_CREATED = "Microsoft.Storage.BlobCreated"


def keys_from_event_grid(body: str | bytes, *, container: str, prefix: str = "") -> tuple[str, ...]:
    """The created blob names (relative to ``prefix``) an Event Grid body names: one event or a
    list, in the Event Grid schema (``eventType``) or CloudEvents (``type``); the blob's path is
    the ``subject``, ``/blobServices/default/containers/<container>/blobs/<name>``."""
    doc = _json(body)
    events = doc if isinstance(doc, list) else [doc]
    if len(events) > MAX_RECORDS:
        raise PoisonEvent(f"body has {len(events)} events, more than {MAX_RECORDS}")
    keys: list[str] = []
    for i, ev in enumerate(events):
        if not isinstance(ev, dict):
            raise PoisonEvent(f"event {i} is not an object")
        kind = ev.get("eventType", ev.get("type"))
        subject = ev.get("subject")
        if not isinstance(kind, str) or not isinstance(subject, str):
            raise PoisonEvent(f"event {i} has no 'eventType'/'type' or 'subject'")
        if kind != BLOB_CREATED:
            continue
        head = f"/blobServices/default/containers/{container}/blobs/"
        if not subject.startswith(head):
            raise PoisonEvent(f"event {i} is for {subject!r}, not container {container!r}")
        key = _relative(subject[len(head) :], prefix)
        if key is not None:
            keys.append(key)
    return tuple(keys)
