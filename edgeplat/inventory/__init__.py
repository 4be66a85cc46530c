"""Device inventory as data: who the fleet's devices are, on which platform, with which tags.

``claims`` resolves what several sources say about one device (with the source of each field
and the conflicts); ``sources`` reads Greengrass and IoT Hub registries in pages; ``store``
folds claims into the ``devices`` table and reads it back for the CLI and rollouts.
"""
