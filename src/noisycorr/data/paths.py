"""Where the shared real data lives (tests and examples use it in place, never a copy)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from noisycorr.errors import InputError

ENV_VAR = "NOISYCORR_SHARED_DATA"


def shared_data_dir() -> Path | None:
    """The shared data folder, or None when it is not on this machine.

    ``$NOISYCORR_SHARED_DATA`` wins when set; otherwise ``<repo>/../shared/data`` (the repository
    root is three levels above this package folder in the src layout).
    """
    env = os.environ.get(ENV_VAR)
    if env:
        path = Path(env).expanduser()
        return path if path.is_dir() else None
    path = Path(__file__).resolve().parents[3].parent / "shared" / "data"
    return path if path.is_dir() else None


def check_writable_dir(path: str | Path, *, what: str = "an output folder") -> None:
    """Raise :class:`InputError` unless ``path`` is a folder this user can write, or can be created.

    Checked before anything is written: the nearest existing folder on the way up must be a folder
    (not a file) that this user may write into (``os.access``).

    Args:
        path: the folder a command is about to create or fill.
        what: how the error names it ("the run folder (run.out_dir)", ...).
    """
    path = Path(path).expanduser()
    probe = path
    while not os.path.lexists(probe) and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        found = "an existing file" if probe == path else f"{probe} is a file, not a folder"
        raise InputError(path, what, found)
    if not os.access(probe, os.W_OK | os.X_OK):
        found = "a folder" if probe == path else f"{probe}, a folder"
        raise InputError(path, f"{what} this user can write", f"{found} without write permission")


def check_readable(path: str | Path, *, what: str) -> None:
    """Raise :class:`InputError` when ``path`` exists but this user may not read it (``os.access``)."""
    path = Path(path)
    need = os.R_OK | (os.X_OK if path.is_dir() else 0)
    if path.exists() and not os.access(path, need):
        raise InputError(path, f"{what} this user can read", "no read permission")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file in the same folder and ``os.replace``.

    Readers never see a half-written file; the temp file is removed if anything fails. The file
    gets the mode every other new file gets (0666 less the umask, 0644 usually), so a colleague can
    read a shared run; the temp file is never made with ``mkstemp``, whose files are 0600.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
