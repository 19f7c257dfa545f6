"""Checkpoints: our own format, safe loading, and the importer for the authors' public pair.

Our format is one ``torch.save``d dict of plain types and tensors (so ``weights_only=True``
loads it)::

    {"format": "streamfuse-checkpoint", "architecture": "didfuse-v1",
     "config": {"in_channels": 1, "features": 64},
     "state_dict": {...},               # DIDFuse.state_dict()
     "metadata": {"date": ..., "training": {...}, "data": ..., ...}}
"""

from __future__ import annotations

import datetime as _dt
import pickle
from pathlib import Path

import torch

from streamfuse.errors import StreamFuseError
from streamfuse.model import ARCHITECTURE, DIDFuse, DIDFuseConfig

FORMAT = "streamfuse-checkpoint"

# The authors' layer names: cov{k}.cov{k}.{index}.{param}. conv1/conv7 are
# [pad, conv, bn, act] like ours; conv2..conv6 have no pad module, so their indices are one lower.
_AUTHORS_ENCODER_LAYERS = (1, 2, 3, 4)
_AUTHORS_DECODER_LAYERS = (5, 6, 7)
_AUTHORS_REFLECTION_LAYERS = (1, 7)


def save_checkpoint(model: DIDFuse, path: str | Path, metadata: dict | None = None) -> Path:
    """Write ``model`` in our format; ``metadata`` gets a ``date`` when it has none."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = dict(metadata or {})
    metadata.setdefault("date", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    payload = {
        "format": FORMAT,
        "architecture": ARCHITECTURE,
        "config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metadata": metadata,
    }
    torch.save(payload, path)
    return path


def _unpickler_reason(error: pickle.UnpicklingError) -> str:
    """The line of a weights-only refusal that names what was refused (PyTorch puts a generic
    paragraph about ``weights_only`` first)."""
    text = str(error)
    marker = "WeightsUnpickler error:"
    if marker in text:
        detail = [line.strip() for line in text.split(marker, 1)[1].splitlines() if line.strip()]
        if detail:
            return detail[0]
    return (text.strip().splitlines() or ["unpickling refused"])[0]


def check_checkpoint_exists(path: Path, fix: str = "give --weights a .pt file") -> None:
    """Raise the one-line error for a missing checkpoint file; ``fix`` ends the message."""
    if path.is_dir():
        raise StreamFuseError(f"{path}: is a folder, not a checkpoint file ({fix})")
    if not path.is_file():
        raise StreamFuseError(f"{path}: no such checkpoint file ({fix})")


def _read_checkpoint_file(path: Path, fix: str = "give --weights a .pt file") -> object:
    """The unpickled contents of ``path`` (weights only); ``fix``: see check_checkpoint_exists."""
    check_checkpoint_exists(path, fix)
    with path.open("rb") as file:
        head = file.read(4)
    # torch.save writes a zip archive (PK..), older versions a bare pickle (protocol byte 0x80).
    if not (head.startswith(b"PK") or head.startswith(b"\x80")):
        raise StreamFuseError(
            f"{path}: not a PyTorch checkpoint (neither a zip archive nor a pickle); give a .pt "
            "file written by `streamfuse train` or `streamfuse import-weights`"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise StreamFuseError(
            f"{path}: refused to load: it holds objects other than tensors "
            f"({_unpickler_reason(error)}); only plain checkpoints are loaded"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        # PyTorch's zip reader appends paragraphs about miniz internals: its first sentence says it.
        first_line = (str(error).strip().splitlines() or ["unreadable"])[0].split(". ")[0]
        raise StreamFuseError(
            f"{path}: not a readable PyTorch checkpoint ({first_line}); "
            "is the file truncated or of another kind?"
        ) from None


def load_checkpoint(path: str | Path) -> tuple[DIDFuse, dict]:
    """Load a checkpoint of our format into a :class:`DIDFuse` (eval mode) and its metadata."""
    path = Path(path)
    payload = _read_checkpoint_file(path)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        if isinstance(payload, dict) and "weight" in payload:
            hint = "it looks like one of the authors' files: convert it with `streamfuse import-weights`"
        else:
            hint = "expected a file written by `streamfuse train` or `streamfuse import-weights`"
        raise StreamFuseError(f"{path}: not a StreamFuse checkpoint ({hint})")
    if payload.get("architecture") != ARCHITECTURE:
        raise StreamFuseError(
            f"{path}: architecture {payload.get('architecture')!r} is not {ARCHITECTURE!r} "
            "(written by another StreamFuse version?)"
        )
    try:
        config = DIDFuseConfig(**payload["config"])
    except TypeError as error:
        raise StreamFuseError(f"{path}: bad 'config' entry ({error})") from None
    model = DIDFuse(config)
    _load_state_dict(model, payload["state_dict"], path)
    return model.eval(), dict(payload.get("metadata") or {})


def _load_state_dict(model: DIDFuse, state_dict: dict, path: Path) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    if missing or unexpected:
        raise StreamFuseError(
            f"{path}: weights do not fit the DIDFuse network "
            f"(missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
            f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''})"
        )
    for key, tensor in state_dict.items():
        if not isinstance(tensor, torch.Tensor):
            raise StreamFuseError(f"{path}: weight {key} is a {type(tensor).__name__}, not a tensor")
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise StreamFuseError(
                f"{path}: weight {key} has shape {tuple(tensor.shape)}, "
                f"the network needs {tuple(expected[key].shape)}"
            )
        # A diverged training run saves NaN/inf weights; they would fuse every frame to garbage.
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise StreamFuseError(
                f"{path}: weight {key} holds NaN or infinite values (a diverged training run?); "
                "use an earlier checkpoint or retrain with a lower learning rate"
            )
    model.load_state_dict(state_dict)


def _authors_to_ours(authors_key: str) -> str:
    """``cov5.cov5.0.weight`` -> ``decoder.conv5.1.weight``."""
    parts = authors_key.split(".")
    if len(parts) != 4 or not parts[0].startswith("cov") or parts[0] != parts[1]:
        raise KeyError(authors_key)
    layer = int(parts[0][3:])
    index = int(parts[2])
    if layer not in _AUTHORS_REFLECTION_LAYERS:
        index += 1  # our zero-padding layers carry an explicit pad module at index 0
    half = "encoder" if layer in _AUTHORS_ENCODER_LAYERS else "decoder"
    return f"{half}.conv{layer}.{index}.{parts[3]}"


def _read_authors_file(path: Path, layers: tuple[int, ...]) -> dict:
    half = "encoder" if layers == _AUTHORS_ENCODER_LAYERS else "decoder"
    payload = _read_checkpoint_file(path, f"give --{half} the authors' {half} .pkl file")
    state_dict = payload.get("weight") if isinstance(payload, dict) else None
    if not isinstance(state_dict, dict):
        raise StreamFuseError(f"{path}: not an authors' checkpoint (expected a dict with 'weight')")
    found = {int(key.split(".")[0][3:]) for key in state_dict if key.startswith("cov")}
    if found != set(layers):
        raise StreamFuseError(
            f"{path}: holds layers {sorted(found)}, expected cov{layers[0]}..cov{layers[-1]} "
            "(encoder file: cov1-cov4, decoder file: cov5-cov7; are they swapped?)"
        )
    return state_dict


def import_authors_weights(encoder_path: str | Path, decoder_path: str | Path) -> DIDFuse:
    """Build a :class:`DIDFuse` from the authors' public encoder/decoder checkpoint pair."""
    encoder_path, decoder_path = Path(encoder_path), Path(decoder_path)
    state_dict = {}
    for path, layers in ((encoder_path, _AUTHORS_ENCODER_LAYERS), (decoder_path, _AUTHORS_DECODER_LAYERS)):
        for key, tensor in _read_authors_file(path, layers).items():
            try:
                state_dict[_authors_to_ours(key)] = tensor
            except (KeyError, ValueError):
                raise StreamFuseError(f"{path}: unexpected key {key!r} for the authors' layout") from None
    model = DIDFuse()
    _load_state_dict(model, state_dict, encoder_path.parent / f"{encoder_path.name}+{decoder_path.name}")
    return model.eval()
