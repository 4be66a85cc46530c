"""The batch manifest: the signed, unencrypted description of a batch.

It is readable without any key, so the central ingest can route and check a batch before
decrypting it; the signature and the AEAD (the manifest is associated data) cover every
field. ``edge_sync.batch`` writes and reads it.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge_sync.batch_keys import MAX_SEQ, object_key
from edge_sync.identity import canonical_json
from edge_sync.ids import validate_id

TAG_BYTES = 16  # AES-GCM's tag, part of every ciphertext


class Eviction(BaseModel):
    """Rows the device's size bound dropped before upload: seqs first..last, ``count`` of them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    first_seq: int = Field(ge=0, le=MAX_SEQ)
    last_seq: int = Field(ge=0, le=MAX_SEQ)
    count: int = Field(ge=1)
    reason: str = Field(min_length=1, max_length=200)

    @model_validator(mode="after")
    def _range(self) -> Eviction:
        if self.last_seq < self.first_seq:
            raise ValueError(f"eviction last_seq {self.last_seq} is below first_seq {self.first_seq}")
        if self.count > self.last_seq - self.first_seq + 1:
            raise ValueError(
                f"eviction count {self.count} exceeds its seq range {self.first_seq}..{self.last_seq}"
            )
        return self


class Manifest(BaseModel):
    """The signed, unencrypted description of a batch; all the central ingest needs to route it.

    ``first_seq``/``last_seq`` span the rows *and* the evictions carried; ``row_count``
    counts rows only. ``hlc_min``/``hlc_max`` are None for an eviction-only batch.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    format_version: int
    tenant_id: str
    device_id: str
    stream: str
    schema_fingerprint: str
    first_seq: int = Field(ge=0, le=MAX_SEQ)
    last_seq: int = Field(ge=0, le=MAX_SEQ)
    row_count: int = Field(ge=0)
    hlc_min: int | None
    hlc_max: int | None
    evictions: tuple[Eviction, ...] = ()
    key_id: str
    wrapped_key: str  # base64
    nonce: str  # base64
    payload_bytes: int = Field(ge=TAG_BYTES)  # ciphertext length: truncation is detected before anything else
    plaintext_sha256: str
    signer_key_id: str
    created_ms: int
    # What the device was enrolled as (its config's ``platform`` and ``tags``): the central
    # inventory's ``edge_agent`` claim. Left out of the canonical form when unset, so batches
    # of agents without them are byte for byte what they were.
    platform: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]{0,31}$")
    tags: dict[str, str] = Field(default_factory=dict, max_length=32)

    @field_validator("tenant_id", "device_id", "stream")
    @classmethod
    def _safe_id(cls, v: str, info) -> str:
        return validate_id(
            {"tenant_id": "tenant", "device_id": "device", "stream": "stream"}[info.field_name], v
        )

    @model_validator(mode="after")
    def _ranges(self) -> Manifest:
        if self.last_seq < self.first_seq:
            raise ValueError(f"last_seq {self.last_seq} is below first_seq {self.first_seq}")
        if (self.hlc_min is None) != (self.row_count == 0) or (self.hlc_max is None) != (self.row_count == 0):
            raise ValueError("hlc_min/hlc_max must be set exactly when the batch has rows")
        return self

    @field_validator("tags")
    @classmethod
    def _small_tags(cls, v: dict[str, str]) -> dict[str, str]:
        for k, val in v.items():
            if not k or len(k) > 128 or len(val) > 256:
                raise ValueError(f"tag {k[:40]!r}: names are 1-128 characters, values at most 256")
        return v

    def canonical_bytes(self) -> bytes:
        data = self.model_dump(mode="json")
        for name in ("platform", "tags"):
            if not data[name]:
                del data[name]
        return canonical_json(data)

    @property
    def evicted_count(self) -> int:
        return sum(e.count for e in self.evictions)

    @property
    def object_key(self) -> str:
        return object_key(self.tenant_id, self.device_id, self.stream, self.first_seq, self.last_seq)
