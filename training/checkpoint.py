"""Atomic, integrity-checked checkpoints loadable with ``torch.load(weights_only=True)``.

File layout: one header line ``SOMCKPT1 <sha256 hex> <payload length>`` (and a newline), then
the ``torch.save`` bytes of the payload (a dict of tensors, numbers, strings, lists and dicts only,
RNG states included as tensors, so that ``weights_only=True`` can read it: no pickle of code).
A truncated or altered file fails the length or hash check with a clear error. Writes go to a
temporary file in the same folder, are flushed to disk and then ``os.replace``-d over the
target, so a run killed while saving keeps the previous checkpoint intact.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sar_optical_matcher.core.files import atomic_output

MAGIC = b"SOMCKPT1"


class CheckpointError(ValueError):
    """A checkpoint is missing, truncated, corrupt or from another configuration."""


def save_checkpoint(payload: dict[str, Any], path: str | Path) -> str:
    """Write ``payload`` atomically; returns the payload's sha256 hex digest."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(payload, buf)
    data = buf.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    # created by open(), so the file has the umask's permissions like every other run output
    # (mkstemp made checkpoints rw------- whatever the umask)
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(MAGIC + f" {digest} {len(data)}\n".encode())
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    return digest


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and verify a checkpoint written by :func:`save_checkpoint`.

    Raises:
        CheckpointError: the file is missing, not a checkpoint, truncated or corrupt.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found; check the path or --out folder")
    raw = path.read_bytes()
    head, sep, data = raw.partition(b"\n")
    parts = head.split(b" ")
    if not sep or len(parts) != 3 or parts[0] != MAGIC:
        raise CheckpointError(
            f"{path} is not a SAR-Optical Matcher checkpoint (bad header); "
            "pass a checkpoint_*.pt written by `python -m training train`"
        )
    digest, length = parts[1].decode(), int(parts[2])
    if len(data) != length:
        raise CheckpointError(
            f"checkpoint {path} is truncated ({len(data)} of {length} payload bytes); "
            "the previous epoch's file may be lost: resume from checkpoint_best.pt or retrain"
        )
    if hashlib.sha256(data).hexdigest() != digest:
        raise CheckpointError(
            f"checkpoint {path} is corrupt (sha256 mismatch); do not use it: resume from "
            "checkpoint_best.pt or retrain"
        )
    return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)


def require_keys(state: Mapping[str, Any], path: str | Path, keys: Any, fix: str) -> None:
    """Refuse a checkpoint that lacks any of ``keys`` (a foreign or hand-made ``.pt``).

    Raises:
        CheckpointError: naming the entries it lacks and ``fix``.
    """
    absent = [k for k in keys if k not in state]
    if absent:
        raise CheckpointError(f"{path} lacks {absent}: not a training checkpoint; {fix}")


def load_error_line(
    path: str | Path, expected: Mapping[str, Any], saved: Mapping[str, Any], fix: str, k: int = 3
) -> str | None:
    """One line naming how a checkpoint's weights differ from the model built here, or None.

    Args:
        path: the checkpoint file (named in the line).
        expected: the state dict of the model this code builds (key -> tensor).
        saved: the checkpoint's ``model`` state dict.
        fix: what to do instead, appended after a semicolon.
        k: keys shown per kind of difference (the count of the others follows).

    Returns:
        ``None`` when every key and shape matches; else the missing and unexpected keys and
        the shape mismatches (checkpoint vs this code's model), the first ``k`` of each.
    """

    def first(items: list[str]) -> str:
        return ", ".join(items[:k]) + (f" and {len(items) - k} more" if len(items) > k else "")

    def shape(v: Any) -> tuple[int, ...] | None:
        return tuple(v.shape) if hasattr(v, "shape") else None

    missing = [n for n in expected if n not in saved]
    unexpected = [n for n in saved if n not in expected]
    sizes = [
        f"{n} {list(shape(saved[n]) or ())} in the checkpoint vs {list(shape(v) or ())} here"
        for n, v in expected.items()
        if n in saved and shape(saved[n]) != shape(v)
    ]
    parts = [
        f"{what} {first(items)}"
        for what, items in (
            (f"{len(missing)} missing key(s):", missing),
            (f"{len(unexpected)} unexpected key(s):", unexpected),
            (f"{len(sizes)} shape mismatch(es):", sizes),
        )
        if items
    ]
    if not parts:
        return None
    return f"the weights in {path} do not fit the model built here ({'; '.join(parts)}); {fix}"


def load_weights(module: nn.Module, saved: Mapping[str, Any], path: str | Path, fix: str) -> None:
    """``module.load_state_dict(saved)``, or a :class:`CheckpointError` of :func:`load_error_line`.

    torch's own error is a wall of lines (one per key) with a traceback; this names the file
    and the first differences in one line.
    """
    line = load_error_line(path, module.state_dict(), saved, fix)
    if line is not None:
        raise CheckpointError(line)
    module.load_state_dict(dict(saved))


def rng_state() -> dict[str, Any]:
    """The torch CPU (and CUDA) RNG states as tensors."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the states saved by :func:`rng_state`."""
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
