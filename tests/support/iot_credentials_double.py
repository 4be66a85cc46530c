"""A loopback DOUBLE of the AWS IoT credentials provider (there is no local server of it).

It speaks the documented API: ``GET /role-aliases/<alias>/credentials`` over mutual TLS,
the thing name in ``x-amzn-iot-thingname``, answering
``{"credentials": {"accessKeyId", "secretAccessKey", "sessionToken", "expiration"}}``; it
refuses (403, ``{"message": ...}``) an unknown alias, a certificate not allowed to assume it,
and a thing name whose thing the certificate is not attached to. The TLS layer requires a
client certificate from the test CA (``tests.support.tls_certs.TestPki``).

What the provider's STS call would do is the test's ``issue(alias, thing_name)`` callback:
with :func:`substituted` it can mint moto IAM keys whose policy is the role policy with
``${credentials-iot:ThingName}`` replaced as IAM would at request time (moto evaluates no
policy variables). ``fail_next`` scripts answers (status, raw body) for error tests.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.support.http_double import serving
from tests.support.tls_certs import TestPki

THING_VAR = "${credentials-iot:ThingName}"
Issue = Callable[[str, str | None], tuple[str, str, str]]


def substituted(policy: dict[str, Any], thing_name: str | None) -> dict[str, Any]:
    """``policy`` as IAM applies it for ``thing_name``: the variable replaced; without a thing
    name, resources naming it match nothing, so statements left without a resource are dropped."""
    statements = []
    for st in policy["Statement"]:
        resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
        if thing_name is None:
            resources = [r for r in resources if THING_VAR not in r]
        else:
            resources = [r.replace(THING_VAR, thing_name) for r in resources]
        if resources:
            statements.append({**st, "Resource": resources})
    return {**policy, "Statement": statements}


@dataclass
class Issued:
    alias: str
    thing_name: str | None
    access_key_id: str
    at: datetime
    expiration: datetime


@dataclass
class IotCredentialsProviderDouble:
    """The double's registry and behaviour; ``serve()`` runs it on loopback HTTPS."""

    pki: TestPki
    issue: Issue
    lifetime: timedelta = timedelta(hours=1)
    aliases: dict[str, set[str]] = field(default_factory=dict)  # alias -> certificate CNs allowed
    things: dict[str, str] = field(default_factory=dict)  # certificate CN -> thing it is attached to
    issued: list[Issued] = field(default_factory=list)
    fail_next: list[tuple[int, bytes]] = field(default_factory=list)
    requests: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def register(self, cn: str, thing: str, alias: str) -> None:
        """A device certificate ``cn`` attached to ``thing``, its IoT policy allowing ``alias``."""
        self.things[cn] = thing
        self.aliases.setdefault(alias, set()).add(cn)

    def respond(self, method: str, path: str, headers: Any, body: bytes, peer: dict | None):
        with self._lock:
            self.requests += 1
            if self.fail_next:
                status, raw = self.fail_next.pop(0)
                return status, raw, {}
            parts = path.split("/")
            if method != "GET" or len(parts) != 4 or parts[1] != "role-aliases" or parts[3] != "credentials":
                return 404, {"message": "Not Found"}, {}
            alias, cn = parts[2], _common_name(peer)
            if cn is None or cn not in self.aliases.get(alias, set()):
                return 403, {"message": "Access Denied"}, {}
            thing = headers.get("x-amzn-iot-thingname")
            if thing is not None and self.things.get(cn) != thing:
                return 403, {"message": "Invalid thing name passed"}, {}
            key_id, secret, token = self.issue(alias, thing)
            now = datetime.now(UTC)
            expiration = now + self.lifetime
            self.issued.append(Issued(alias, thing, key_id, now, expiration))
            return (
                200,
                {
                    "credentials": {
                        "accessKeyId": key_id,
                        "secretAccessKey": secret,
                        "sessionToken": token,
                        "expiration": expiration.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    }
                },
                {},
            )

    @contextmanager
    def serve(self) -> Iterator[str]:
        """Serve on a free loopback port with client certificates required; yield the https URL."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cert, key = self.pki.server
        context.load_cert_chain(cert, key)
        context.load_verify_locations(self.pki.ca)
        context.verify_mode = ssl.CERT_REQUIRED
        with serving(self.respond, name="iot-credentials-double", tls=context) as url:
            yield url


def _common_name(peer: dict | None) -> str | None:
    if not peer:
        return None
    for rdn in peer.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return value
    return None
