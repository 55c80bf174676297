"""Where the shared real data lives (tests and examples use it in place, never a copy)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

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


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file in the same folder and ``os.replace``.

    Readers never see a half-written file; the temp file is removed if anything fails.
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
