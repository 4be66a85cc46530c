"""Fleet backends: one interface (``FleetBackend``: deploy / rollback / status) over the
platform's own desired-state channel (``edge_agent``, the embedded default), AWS IoT
Greengrass v2 (``greengrass``) and Azure IoT Edge (``azure_iot_edge``).

Names are re-exported lazily, so importing the interface does not load boto3 or the Azure SDK.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "base": (
        "BackendError",
        "BackendStatus",
        "DeployResult",
        "DeviceRef",
        "DeviceStatus",
        "FleetBackend",
        "GreengrassComponent",
        "IotEdgeModule",
        "ReleaseSpec",
        "StagingNotSupported",
    ),
    "edge_agent": ("EdgeAgentBackend",),
    "greengrass": ("GreengrassBackend",),
    "azure_iot_edge": ("AzureIotEdgeBackend",),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
