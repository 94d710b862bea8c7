"""Writing files so that a failure never leaves one half-written."""

import contextlib
import os
import secrets


def atomic_write(path, data):
    """Write `data` (bytes, or str as UTF-8) to `path` through a temporary
    file beside it, synced to disk, then renamed over `path`: readers see
    the old file or the new one, and a failure leaves no partial file
    behind."""
    path = os.fspath(path)
    if names_a_folder(path):
        # `os.replace` would fail naming the temporary file, not `path`.
        raise IsADirectoryError(
            f"Cannot write '{path}': it names a directory, not a file."
        )
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    name = f".{os.path.basename(path)}.{secrets.token_hex(4)}.tmp"
    temporary = os.path.join(folder, name)
    if isinstance(data, str):
        # Not the locale's encoding (ASCII in a C locale, cp1252 on
        # Windows), which fails on, or alters, text read as UTF-8.
        data = data.encode("utf-8")
    try:
        with open(temporary, "xb") as file:
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


def names_a_folder(path):
    """Whether `path` is a folder, or a name with no file part (empty, or
    ending in a separator), which no file can be written to."""
    path = os.fspath(path)
    return not os.path.basename(path) or os.path.isdir(path)
