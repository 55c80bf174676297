"""Training state (resumable, ``weights_only``-loadable) and best weights (safetensors)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save
from torch import nn

from noisycorr.data.paths import atomic_write_bytes
from noisycorr.errors import InputError


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file, then rename: a killed run never leaves a torn file."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_state(path: Path) -> dict[str, Any]:
    """Load a training-state checkpoint with ``weights_only=True``."""
    if not path.is_file():
        raise InputError(path, "a training checkpoint", "no such file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupted or foreign file
        found = f"an unreadable file ({type(err).__name__})"
        raise InputError(path, "a noisycorr training checkpoint", found) from None


def load_last_weights(module: nn.Module, path: Path) -> None:
    """Load the method state of a training checkpoint (the last finished epoch) into ``module``."""
    state = load_state(path)
    if not isinstance(state, dict) or "method" not in state:
        raise InputError(path, "a noisycorr training checkpoint with method weights", "another file")
    try:
        module.load_state_dict(state["method"])
    except RuntimeError:
        raise InputError(path, "the training state of this run's model", "tensors of another model") from None


def check_weights_choice(weights: str) -> None:
    """Reject anything but ``best`` (best.safetensors) or ``last`` (checkpoint.pt)."""
    if weights not in ("best", "last"):
        raise InputError("--weights", "best or last", repr(weights))


def weight_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """The module's state dict without its training-only state.

    A module may name state-dict key prefixes in ``training_only_state`` (e.g. a memory bank of
    embeddings): those tensors go into the resumable training checkpoint but not into exported
    weights, which hold what evaluation and scoring need.
    """
    skip = tuple(getattr(module, "training_only_state", ()))
    return {k: v for k, v in module.state_dict().items() if not (skip and k.startswith(skip))}


def export_weights(module: nn.Module, path: Path, metadata: dict[str, str]) -> None:
    """Write the module's weights (without training-only state) as safetensors with string metadata (atomic)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in weight_state(module).items()}
    atomic_write_bytes(path, save(tensors, metadata=metadata))


def read_metadata(path: Path) -> dict[str, str]:
    """The metadata dict stored in a safetensors header."""
    with open(path, "rb") as fh:
        size = int.from_bytes(fh.read(8), "little")
        header = json.loads(fh.read(size))
    return header.get("__metadata__", {})


def load_weights(module: nn.Module, path: Path, *, expect: dict[str, str]) -> None:
    """Load safetensors weights into ``module`` after checking that they come from the same setup.

    Args:
        module: the freshly built method.
        path: the ``.safetensors`` file.
        expect: metadata that must match, e.g. ``{"backbone": "vse", "method": "vanilla"}``.
    """
    if not path.is_file():
        raise InputError(path, "a weights file", "no such file")
    try:
        meta = read_metadata(path)
        tensors = load_file(str(path))
    except Exception as err:
        raise InputError(path, "a safetensors weights file", f"an unreadable file ({type(err).__name__})") from None
    for key, value in expect.items():
        if meta.get(key, value) != value:
            raise InputError(path, f"weights of {key} {value!r}", f"{key} {meta[key]!r}")
    own = weight_state(module)
    missing = sorted(set(own) - set(tensors))
    extra = sorted(set(tensors) - set(own))
    if missing or extra:
        raise InputError(path, "weights for this model", f"{len(missing)} missing and {len(extra)} unexpected tensors")
    bad = [k for k in own if own[k].shape != tensors[k].shape]
    if bad:
        raise InputError(
            path, f"{bad[0]} of shape {tuple(own[bad[0]].shape)}", f"shape {tuple(tensors[bad[0]].shape)}"
        )
    # training-only state (absent from the file) keeps its current values
    module.load_state_dict(tensors, strict=len(own) == len(module.state_dict()))
