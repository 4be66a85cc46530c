"""The arrival queue on Azure: Event Grid ``BlobCreated`` events on a storage queue, read with
azure-storage-queue.

An Event Grid subscription on the storage account delivers ``Microsoft.Storage.BlobCreated``
events of the batch container to a storage queue (docs/operations.md); Event Grid writes each
event Base64-encoded, plain JSON is read too. The ack rules are the SQS reader's: a receive
hides messages for ``visibility_timeout_s``, only settled ones are deleted, the rest come back.
Poison is sent to ``dead_letter_queue`` (a JSON record with the reason) and deleted. Retries are
the SDK's (``ExponentialRetry``); what still fails raises ``QueueUnavailable``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence

from edgeplat.sync.arrival_queue import (
    DEFAULT_VISIBILITY_TIMEOUT_S,
    ArrivalMessage,
    QueueUnavailable,
    excerpt,
)
from edgeplat.sync.object_events import PoisonEvent, keys_from_event_grid

PAGE = 32  # the most a storage queue returns per request
GONE = ("MessageNotFound", "PopReceiptMismatch")


def event_text(content: str) -> str:
    """The event JSON of a message: as is when it is JSON, else Base64-decoded (Event Grid's way)."""
    if content.lstrip()[:1] in ("{", "["):
        return content
    try:
        return base64.b64decode(content, validate=True).decode()
    except (binascii.Error, ValueError) as exc:
        raise PoisonEvent(f"message is neither JSON nor Base64 of JSON ({exc})") from None


class AzureQueueArrivalQueue:
    """Event Grid blob-created events on an Azure storage queue (see the module docstring)."""

    def __init__(
        self,
        connection_string: str,
        queue_name: str,
        *,
        container: str,
        prefix: str = "",
        dead_letter_queue: str | None = None,
        visibility_timeout_s: int = DEFAULT_VISIBILITY_TIMEOUT_S,
        retry_total: int = 2,
        initial_backoff_s: int = 1,
    ) -> None:
        from azure.storage.queue import ExponentialRetry, QueueClient

        if not connection_string or not queue_name:
            raise ValueError(
                "Azure arrival queue needs a connection string and a queue name: set "
                "EDGEPLAT_ARRIVAL_AZURE_CONNECTION_STRING and EDGEPLAT_ARRIVAL_AZURE_QUEUE"
            )
        retry = ExponentialRetry(initial_backoff=initial_backoff_s, increment_base=2, retry_total=retry_total)

        def client(name: str) -> QueueClient:
            return QueueClient.from_connection_string(connection_string, name, retry_policy=retry)

        self._client = client(queue_name)
        self._dead = client(dead_letter_queue) if dead_letter_queue else None
        self.url = self._client.url
        self.container = container
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self.visibility_timeout_s = visibility_timeout_s

    def _call(self, what: str, fn, *args, **kwargs):
        from azure.core.exceptions import AzureError

        try:
            return fn(*args, **kwargs)
        except AzureError as exc:
            raise QueueUnavailable(f"Azure queue {self.url} failed {what}: {exc}") from exc

    def _message(self, m) -> ArrivalMessage:
        content = m.content if isinstance(m.content, str) else str(m.content)
        try:
            keys = keys_from_event_grid(event_text(content), container=self.container, prefix=self.prefix)
            problem = None
        except PoisonEvent as exc:
            keys, problem = (), str(exc)
        return ArrivalMessage(m.id, m.pop_receipt, keys, problem, excerpt(content), m.dequeue_count or 1)

    def receive(self, max_messages: int) -> list[ArrivalMessage]:
        def take() -> list:
            got: dict[str, object] = {}
            pages = self._client.receive_messages(
                messages_per_page=min(PAGE, max_messages),
                visibility_timeout=self.visibility_timeout_s,
                max_messages=max_messages,
            ).by_page()
            for page in pages:
                items = list(page)
                fresh = [m for m in items if m.id not in got]
                got.update((m.id, m) for m in items)  # a message seen again: keep its newest pop receipt
                if not fresh:
                    break  # empty, or (visibility 0) the same messages again
            return list(got.values())

        return [self._message(m) for m in self._call("receive_messages", take)]

    def ack(self, messages: Sequence[ArrivalMessage]) -> None:
        from azure.core.exceptions import HttpResponseError

        for m in messages:
            try:
                self._call("delete_message", self._client.delete_message, m.message_id, m.receipt)
            except QueueUnavailable as exc:
                cause = exc.__cause__
                if isinstance(cause, HttpResponseError) and cause.error_code in GONE:
                    continue  # deleted, or received again since (a newer pop receipt): acked later
                raise

    def dead_letter(self, messages: Sequence[ArrivalMessage]) -> None:
        if self._dead is not None:
            for m in messages:
                record = {"reason": m.problem, "message_id": m.message_id, "queue": self.url, "body": m.body}
                self._call("send_message", self._dead.send_message, json.dumps(record, sort_keys=True))
        self.ack(messages)

    def checkpoint(self) -> dict | None:
        return None

    def close(self) -> None:
        self._client.close()
        if self._dead is not None:
            self._dead.close()
