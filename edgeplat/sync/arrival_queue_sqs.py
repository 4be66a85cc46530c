"""The arrival queue on SQS: S3 event notifications of the batch bucket, read with boto3.

The bucket sends ``s3:ObjectCreated:*`` events (filtered to the store's prefix and ``.batch``)
to a standard SQS queue (docs/operations.md). A receive hides its messages for
``visibility_timeout_s``; a message the sensor does not ack (its objects are not in the ledger
yet) comes back after that and is checked again, so pending receipts never have to live in the
sensor's cursor, and a sensor that dies mid-tick loses nothing. Transient failures are retried
by botocore (``retry_mode``); what still fails raises ``QueueUnavailable``. Poison messages are
copied to ``dead_letter_url`` (when set) with their reason as a message attribute, then deleted.

SQS returns at most 10 messages per receive and deletes at most 10 per batch call, so one
reader drains about 10 messages per round trip. After a first (long-polling) receive comes back
full, ``receivers`` receives run concurrently per round (boto3 clients are thread-safe) until
``max_messages`` are in hand or a round brings nothing new; acks go out as concurrent
``delete_message_batch`` calls the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Literal

from edgeplat.sync.arrival_queue import (
    DEFAULT_VISIBILITY_TIMEOUT_S,
    ArrivalMessage,
    QueueUnavailable,
    excerpt,
)
from edgeplat.sync.object_events import PoisonEvent, keys_from_s3_event

SQS_BATCH = 10  # the most SQS returns or deletes per call
DEFAULT_RECEIVERS = 1  # concurrent receive / delete calls per tick (opt in: docs/operations.md)


class SqsArrivalQueue:
    """S3 object-created notifications on an SQS queue (see the module docstring)."""

    def __init__(
        self,
        queue_url: str,
        *,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
        retry_mode: Literal["standard", "adaptive"] = "standard",
        max_attempts: int = 3,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        visibility_timeout_s: int = DEFAULT_VISIBILITY_TIMEOUT_S,
        wait_time_s: int = 1,
        dead_letter_url: str | None = None,
        receivers: int = DEFAULT_RECEIVERS,
    ) -> None:
        import boto3
        from botocore.config import Config

        if not queue_url:
            raise ValueError("SQS queue URL is empty: set EDGEPLAT_ARRIVAL_QUEUE_URL to the queue's URL")
        if not 0 <= visibility_timeout_s <= 43_200:
            raise ValueError(
                f"visibility_timeout_s must be 0..43200 (SQS's range), got {visibility_timeout_s}"
            )
        if not 1 <= receivers <= 64:
            raise ValueError(f"receivers must be 1..64 concurrent SQS calls, got {receivers}")
        self.url = queue_url
        self.receivers = receivers
        self.bucket = bucket
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self.visibility_timeout_s = visibility_timeout_s
        self.wait_time_s = wait_time_s
        self.dead_letter_url = dead_letter_url or None
        self._client = boto3.client(
            "sqs",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            aws_session_token=session_token,
            config=Config(
                retries={"mode": retry_mode, "total_max_attempts": max_attempts},
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                max_pool_connections=max(10, receivers),
            ),
        )

    def _call(self, op: str, **kwargs):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self._client, op)(**kwargs)
        except (BotoCoreError, ClientError) as exc:
            raise QueueUnavailable(f"SQS queue {self.url} failed {op}: {exc}") from exc

    def _message(self, m: dict) -> ArrivalMessage:
        body = m.get("Body", "")
        count = int(m.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
        try:
            keys = keys_from_s3_event(body, bucket=self.bucket, prefix=self.prefix)
            problem = None
        except PoisonEvent as exc:
            keys, problem = (), str(exc)
        return ArrivalMessage(m["MessageId"], (m["ReceiptHandle"],), keys, problem, excerpt(body), count)

    def _receive_once(self, limit: int, wait: int) -> list[dict]:
        resp = self._call(
            "receive_message",
            QueueUrl=self.url,
            MaxNumberOfMessages=limit,
            VisibilityTimeout=self.visibility_timeout_s,
            WaitTimeSeconds=wait,
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        )
        return resp.get("Messages", [])

    def receive(self, max_messages: int) -> list[ArrivalMessage]:
        out: dict[str, ArrivalMessage] = {}

        def take(got: list[dict]) -> int:
            fresh = 0
            for m in got:
                seen = out.get(m["MessageId"])
                msg = self._message(m)
                if seen is None:
                    fresh += 1
                else:  # seen again: only the newest receipt deletes, and concurrent calls
                    # cannot tell which that is, so the ack deletes with every receipt
                    msg = replace(msg, receipt=seen.receipt + msg.receipt)
                out[m["MessageId"]] = msg
            return fresh

        # wait once per tick for the first message; then rounds of concurrent receives take what is
        # there (SQS may answer short while more is queued: only an answer with nothing new ends it)
        if max_messages <= 0 or not take(self._receive_once(min(SQS_BATCH, max_messages), self.wait_time_s)):
            return list(out.values())
        with ThreadPoolExecutor(self.receivers) as pool:
            while len(out) < max_messages:
                left = max_messages - len(out)
                calls = [(min(SQS_BATCH, left - i), 0) for i in range(0, left, SQS_BATCH)][: self.receivers]
                rounds = list(pool.map(lambda c: self._receive_once(*c), calls))
                if not take([m for got in rounds for m in got]):
                    break  # empty, or (visibility 0) the same messages again
        return list(out.values())

    def _delete(self, receipts: list[str]) -> None:
        # a failed entry (an older receipt, one that expired) comes back and is acked on a later tick
        self._call(
            "delete_message_batch",
            QueueUrl=self.url,
            Entries=[{"Id": str(n), "ReceiptHandle": r} for n, r in enumerate(receipts)],
        )

    def ack(self, messages: Sequence[ArrivalMessage]) -> None:
        receipts = [r for m in messages for r in m.receipt]
        chunks = [receipts[i : i + SQS_BATCH] for i in range(0, len(receipts), SQS_BATCH)]
        if not chunks:
            return
        with ThreadPoolExecutor(min(self.receivers, len(chunks))) as pool:
            list(pool.map(self._delete, chunks))

    def dead_letter(self, messages: Sequence[ArrivalMessage]) -> None:
        if self.dead_letter_url:
            for m in messages:
                self._call(
                    "send_message",
                    QueueUrl=self.dead_letter_url,
                    MessageBody=m.body or "(empty)",
                    MessageAttributes={
                        "reason": {"DataType": "String", "StringValue": m.problem or "unknown"},
                        "source_message_id": {"DataType": "String", "StringValue": m.message_id},
                        "source_queue": {"DataType": "String", "StringValue": self.url},
                    },
                )
        self.ack(messages)

    def checkpoint(self) -> dict | None:
        return None

    def close(self) -> None:
        self._client.close()
