"""The two ways an install stops short, shared by the downlink and the installers.

``InstallPending``: the installer made progress but needs another sync to finish (the
sync's download allowance ran out, or the connection dropped mid-artifact); nothing failed,
the downlink leaves the document unapplied so the next pull resumes it. ``InstallError``:
the release must not run here (bad signature, hash mismatch, no disk space, failed health
check); ``reason`` is machine-readable and goes to the health stream and the alert.
"""

from __future__ import annotations


class InstallPending(Exception):
    """The install is under way and resumes at the next sync (see module doc)."""


class InstallError(RuntimeError):
    """The release cannot be installed or activated here; ``reason`` names why in one word."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
