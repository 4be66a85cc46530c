"""Temporary S3 credentials from the AWS IoT credentials provider, fetched with the device certificate.

On AWS a device need not hold its tenant's shared S3 key: it presents its X.509 certificate
(mutual TLS) to the account's credentials provider endpoint and gets credentials of the
tenant's device role, whose policy reaches only ``tenant=<T>/device=<its thing name>/``
(``edgeplat.security.device_scopes`` generates and checks it). The request, as documented
for the provider and as Greengrass' token exchange service makes it::

    GET https://<prefix>.credentials.iot.<region>.amazonaws.com/role-aliases/<alias>/credentials
    x-amzn-iot-thingname: <device id>
    -> {"credentials": {"accessKeyId", "secretAccessKey", "sessionToken", "expiration"}}

The thing name is the device id: the provider sets the role policy's
``${credentials-iot:ThingName}`` from it, and only for a thing the certificate is attached to.

:class:`IotCredentialSource` hands botocore a ``RefreshableCredentials`` that fetches on first
use (so the agent starts, and records, without the network), and fetches again
``refresh_before_s`` before ``expiration``; until the credentials are about to expire a
failed refresh keeps the current ones (botocore's advisory period), after that the request
fails with :class:`IotCredentialsError`, which the S3 store reports as ``StoreUnavailable``:
the sync says offline and names the cause, rows stay cached.
"""

from __future__ import annotations

import http.client
import json
import ssl
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse

from botocore.credentials import DeferredRefreshableCredentials
from botocore.exceptions import CredentialRetrievalError

from edge_sync.ids import validate_id
from edge_sync.objectstore_url import from_url

METHOD = "iot-credentials-provider"
THING_HEADER = "x-amzn-iot-thingname"
MAX_ANSWER = 64 * 1024  # a credentials answer is a few hundred bytes


class IotCredentialsError(CredentialRetrievalError):
    """The credentials provider could not be reached, refused, or answered something unusable."""

    def __init__(self, message: str) -> None:
        super().__init__(provider=METHOD, error_msg=message)
        self.message = message


def _https_url(endpoint: str) -> tuple[str, int]:
    url = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
    if url.scheme != "https" or not url.hostname or url.path not in ("", "/"):
        raise ValueError(
            f"IoT credentials endpoint {endpoint!r} must be a host name or https://host[:port] "
            "(`aws iot describe-endpoint --endpoint-type iot:CredentialProvider`)"
        )
    return url.hostname, url.port or 443


class IotCredentialsProvider:
    """One device's client of the credentials provider: ``fetch()`` gets a fresh set of credentials."""

    def __init__(
        self,
        endpoint: str,
        role_alias: str,
        thing_name: str,
        *,
        cert_path: Path,
        key_path: Path,
        ca_path: Path | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.host, self.port = _https_url(endpoint)
        self.role_alias = role_alias
        self.thing_name = validate_id("device", thing_name)
        self.path = f"/role-aliases/{quote(role_alias, safe='')}/credentials"
        self.timeout_s = timeout_s
        self._context = ssl.create_default_context(cafile=str(ca_path) if ca_path else None)
        try:
            self._context.load_cert_chain(str(cert_path), str(key_path))
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(
                f"device certificate {cert_path} / key {key_path} cannot be loaded: {exc}"
            ) from None

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}{self.path}"

    def fetch(self) -> dict[str, str]:
        """Fresh credentials as botocore's refresh metadata (access_key, secret_key, token, expiry_time)."""
        conn = http.client.HTTPSConnection(
            self.host, self.port, context=self._context, timeout=self.timeout_s
        )
        try:
            conn.request(
                "GET", self.path, headers={THING_HEADER: self.thing_name, "Accept": "application/json"}
            )
            response = conn.getresponse()
            body = response.read(MAX_ANSWER + 1)
        except (OSError, http.client.HTTPException) as exc:
            raise IotCredentialsError(
                f"IoT credentials provider {self.url} unreachable ({type(exc).__name__}: {exc}); "
                "check the endpoint, the network and that the device certificate is valid"
            ) from None
        finally:
            conn.close()
        if response.status != 200:
            raise IotCredentialsError(
                f"IoT credentials provider {self.url} refused thing {self.thing_name!r} "
                f"({response.status}: {_message(body)}): the certificate must be active, attached to the "
                f"thing named like the device, and its IoT policy must allow iot:AssumeRoleWithCertificate "
                f"on role alias {self.role_alias!r}"
            )
        return self._parse(body)

    def _parse(self, body: bytes) -> dict[str, str]:
        try:
            creds = json.loads(body[:MAX_ANSWER])["credentials"]
            metadata = {
                "access_key": _text(creds["accessKeyId"]),
                "secret_key": _text(creds["secretAccessKey"]),
                "token": _text(creds["sessionToken"]),
                "expiry_time": _expiry(creds["expiration"]),
            }
        except (ValueError, KeyError, TypeError) as exc:
            raise IotCredentialsError(
                f"IoT credentials provider {self.url} answered without usable credentials "
                f"({type(exc).__name__}: {exc}); expected "
                '{"credentials": {"accessKeyId", "secretAccessKey", "sessionToken", "expiration"}}'
            ) from None
        # botocore would raise a bare RuntimeError for credentials expired on arrival
        now = datetime.now(UTC)
        if datetime.fromisoformat(metadata["expiry_time"]) <= now:
            raise IotCredentialsError(
                f"IoT credentials provider {self.url} issued credentials expiring at {metadata['expiry_time']}, "
                f"before this device's clock ({now.isoformat()}): check the device clock (NTP)"
            )
        return metadata


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a non-empty string, got {type(value).__name__}")
    return value


def _expiry(value: Any) -> str:
    moment = datetime.fromisoformat(_text(value).replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"expiration {value!r} has no time zone")
    return moment.astimezone(UTC).isoformat()


def _message(body: bytes) -> str:
    try:
        data = json.loads(body[:MAX_ANSWER])
        if isinstance(data, dict) and isinstance(data.get("message"), str):
            return data["message"][:200]
    except ValueError:
        pass
    return repr(body[:200])


class _IotCredentials(DeferredRefreshableCredentials):
    """botocore's deferred refreshable credentials, with the refresh window the config asks for."""

    def __init__(self, provider: IotCredentialsProvider, refresh_before_s: float) -> None:
        super().__init__(provider.fetch, METHOD)
        # botocore refreshes ahead of expiry in two windows: advisory (a failure keeps the
        # current credentials) and mandatory (a failure fails the request)
        self._advisory_refresh_timeout = refresh_before_s
        self._mandatory_refresh_timeout = min(60.0, refresh_before_s / 2)


class IotCredentialSource:
    """Builds the S3 object store of a device whose credentials come from the IoT credentials provider."""

    def __init__(self, provider: IotCredentialsProvider, refresh_before_s: float = 300.0) -> None:
        if refresh_before_s <= 0:
            raise ValueError(f"refresh_before_s must be positive, got {refresh_before_s}")
        self.provider = provider
        self.credentials = _IotCredentials(provider, refresh_before_s)

    def store(self, url: str, **options: Any) -> Any:
        """An ``S3ObjectStore`` for ``url`` signing with these (self-refreshing) credentials."""
        if not str(url).startswith("s3://"):
            raise ValueError(
                f"IoT credentials are S3 credentials; object_store.url must be s3://, got {url!r}"
            )
        return from_url(url, credentials=self.credentials, **options)
