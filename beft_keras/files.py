"""Writing files so that a failure never leaves one half-written."""

import contextlib
import os
import secrets


def atomic_write(path, data):
    """Write `data` (str or bytes) to `path` through a temporary file beside
    it, synced to disk, then renamed over `path`: readers see the old file or
    the new one, and a failure leaves no partial file behind."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    name = f".{os.path.basename(path)}.{secrets.token_hex(4)}.tmp"
    temporary = os.path.join(folder, name)
    mode = "xb" if isinstance(data, bytes) else "x"
    try:
        with open(temporary, mode) as file:
            file.write(data)
            file.flush()
            # On disk before the rename, so that a crash cannot leave a
            # truncated file under the final name.
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        raise
