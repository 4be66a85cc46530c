"""Fleet backends: one interface (``FleetBackend``: deploy / rollback / status, in ``base``) over the
platform's own desired-state channel (``edge_agent``, the embedded default), AWS IoT Greengrass v2
(``greengrass``) and Azure IoT Edge (``azure_iot_edge``)."""
