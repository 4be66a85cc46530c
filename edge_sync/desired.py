"""The desired-state document: what the platform wants one device to run and hold.

Central code (the ``edge_agent`` fleet backend, central state edits) writes it; the
device agent pulls and verifies it (edge_sync downlink). One signed JSON object per
device at ``tenant=<T>/device=<D>/desired.json`` in the object store::

    {"document": {...}, "key_id": "<platform key fingerprint>", "signature": "<base64>"}

The document (``DesiredState``) carries a ``revision`` that only grows: the agent refuses
a document whose revision is lower than one it already applied (a replayed or rolled-back
document), one signed by any key but the platform's, and one for another device.

``staged`` (blue/green) is a release to install on the device's inactive slot without
activating it, so a later switch is instant. It is optional and left out of the signed JSON
when empty: agents that predate it (documents are ``extra="forbid"``) keep accepting every
document that stages nothing.

``rollback_of`` (``{rollout_id, version}``) says the release ``version`` of rollout
``rollout_id`` was rolled back when the platform does not know what the device ran before it
(a device that had no document, or one without a release, when the rollout reached it). The
document's ``release`` is then empty and the agent goes back to the release it recorded,
itself, just before it first applied that rollout's release (see ``edge_sync.downlink``).
It stays in every later revision (state edits, staging) until a new release decision
replaces it, so a device offline during the rollback still gets it. Like ``staged`` it is
left out of the signed JSON when empty; an agent that predates it refuses (and alerts on)
the few documents that carry it, instead of silently keeping the rolled-back release.

``state_rules`` carries the operator's conflict rules (``edge_sync.rules``: the rules
document, its declared version and its content hash) so the device merges central edits
under the rules the platform merges with. It is left out when the platform uses the rules
edge_sync ships, so documents stay what older agents accept. A device adopts it only if every
resolver it names is installed on the device (``edge_sync.downlink``).
"""

from __future__ import annotations

import functools
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from edge_sync.identity import PlatformSigner, SignatureError, verify_document
from edge_sync.ids import validate_id
from edge_sync.json_bounded import loads as bounded_loads
from edge_sync.rules import RuleSet, default_rules

FORMAT = 1
MAX_DOCUMENT_BYTES = 1 << 20
# Fields added after the first agents shipped: left out of the signed JSON when empty.
OPTIONAL_FIELDS = ("staged", "rollback_of", "state_rules")


class DesiredStateError(ValueError):
    """A desired-state document that must not be applied; ``reason`` is machine-readable."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Release(BaseModel):
    """A release assignment: the version to run and the slot to run it in."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str
    slot: Literal["a", "b"] = "a"
    rollout_id: str | None = None
    phase: int | None = None


class RollbackOf(BaseModel):
    """The rolled-back release: which rollout's release, and its version (see module doc)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rollout_id: str = Field(min_length=1)
    version: str = Field(min_length=1)


class StateEdit(BaseModel):
    """One central edit of a state field (value is JSON text)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    namespace: str
    key: str
    field: str
    value: str
    hlc: int
    node_id: str = "central"
    origin: Literal["central"] = "central"


class StateRulesDoc(BaseModel):
    """The conflict rules a device must merge with: ``RuleSet.document()``, version and hash."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = Field(ge=1)
    content_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    rules: dict[str, Any]


class DesiredState(BaseModel):
    """What one device should run and which central state edits it should apply."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal[1] = FORMAT
    tenant_id: str
    device_id: str
    revision: int = Field(ge=1)
    issued_hlc: int = Field(ge=0)
    release: Release | None = None
    previous: Release | None = None  # the slot to fall back to (blue/green, rollback)
    staged: Release | None = None  # installed on the inactive slot, not activated (blue/green)
    rollback_of: RollbackOf | None = None  # go back to what ran before this rollout's release
    state_edits: list[StateEdit] = Field(default_factory=list)
    state_rules: StateRulesDoc | None = None  # the operator's rules; None: the packaged ones


@functools.cache
def _packaged_hash() -> str:
    return default_rules().content_hash


def state_rules_doc(rules: RuleSet | None) -> StateRulesDoc | None:
    """What a document carries for ``rules``: None for no rules or the packaged ones (left out)."""
    if rules is None or rules.content_hash == _packaged_hash():
        return None
    return StateRulesDoc(version=rules.version, content_hash=rules.content_hash, rules=rules.document())


def desired_key(tenant_id: str, device_id: str) -> str:
    return f"tenant={validate_id('tenant', tenant_id)}/device={validate_id('device', device_id)}/desired.json"


def encode(doc: DesiredState, signer: PlatformSigner) -> bytes:
    body = doc.model_dump(mode="json")
    for name in OPTIONAL_FIELDS:
        if body.get(name) is None:
            body.pop(name, None)  # older agents forbid unknown fields: omit what they cannot know
    return json.dumps(signer.sign_document(body), sort_keys=True).encode()


def decode(
    data: bytes,
    *,
    platform_keys: bytes | list[bytes],
    tenant_id: str,
    device_id: str,
    applied_revision: int = 0,
) -> DesiredState:
    """Verify and parse a document for this device; refuse anything unsafe to apply."""
    if len(data) > MAX_DOCUMENT_BYTES:
        raise DesiredStateError(
            "oversized", f"desired-state document is {len(data)} bytes, over {MAX_DOCUMENT_BYTES}"
        )
    try:
        signed: dict[str, Any] = bounded_loads(data)  # deep nesting: bad_json, not RecursionError
    except ValueError as exc:
        raise DesiredStateError("bad_json", f"desired-state document is not JSON: {exc}") from exc
    if not isinstance(signed, dict):
        raise DesiredStateError("bad_json", "desired-state document is not a JSON object")
    try:
        body = verify_document(signed, platform_keys)
    except SignatureError as exc:
        raise DesiredStateError(
            "bad_signature", f"desired-state document signature does not verify: {exc}"
        ) from exc
    try:
        doc = DesiredState.model_validate(body)
    except ValueError as exc:
        raise DesiredStateError("bad_document", f"desired-state document is malformed: {exc}") from exc
    if (doc.tenant_id, doc.device_id) != (tenant_id, device_id):
        raise DesiredStateError(
            "wrong_device",
            f"desired-state document is for {doc.tenant_id}/{doc.device_id}, not this device {tenant_id}/{device_id}",
        )
    if doc.revision < applied_revision:
        raise DesiredStateError(
            "stale_revision",
            f"desired-state revision {doc.revision} is older than the applied revision {applied_revision}: refused",
        )
    return doc
