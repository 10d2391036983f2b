"""Save, load, hash and export: the hypernetwork checkpoint and peft adapter folders.

Checkpoint layout (a directory)::

    hypernet.safetensors   every tensor: shared weights and client embeddings
    hypernet.json          format version, generator architecture tag, its config,
                           TargetSpec, LoRA config, client ids in order, sha256 of
                           hypernet.safetensors

:func:`load_hypernet` builds the generator registered under the checkpoint's
``"architecture"`` tag (:data:`hypernet.generators.GENERATORS`); a checkpoint without a
tag was written before tags existed and is a ``"hyperlora"``.

An exported adapter is a standard peft folder (``adapter_config.json`` +
``adapter_model.safetensors``) that ``PeftModel.from_pretrained`` loads as is.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from hypernet.atomic import atomic_directory, atomic_write_bytes
from hypernet.errors import CheckpointMismatchError, ConfigError, CorruptFileError
from hypernet.generators import DEFAULT_ARCHITECTURE, GENERATORS, Generator
from hypernet.targets import TargetSpec

__all__ = [
    "adapter_hash",
    "file_sha256",
    "save_hypernet",
    "remove_client_from_checkpoint",
    "load_hypernet",
    "read_meta",
    "verify_checkpoint",
    "checkpoint_architecture",
    "export_adapter",
    "HYPERNET_WEIGHTS",
    "HYPERNET_META",
]

FORMAT_VERSION = 1
HYPERNET_WEIGHTS = "hypernet.safetensors"
HYPERNET_META = "hypernet.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def adapter_hash(adapter: Mapping[str, torch.Tensor]) -> str:
    """Hex sha256 of a canonical serialisation of ``adapter``.

    For each key in sorted order: length-prefixed key, dtype name, shape, then the raw
    little-endian bytes of the contiguous CPU tensor. Independent of dict order, device and
    memory layout; any change to a key, dtype, shape or value changes the hash.
    """
    h = hashlib.sha256(b"hyperfed.adapter.v1\x00")
    for key in sorted(adapter):
        tensor = adapter[key].detach().to("cpu").contiguous()
        for field in (key, str(tensor.dtype).removeprefix("torch.")):
            encoded = field.encode()
            h.update(struct.pack("<I", len(encoded)) + encoded)
        h.update(struct.pack("<I", tensor.dim()) + struct.pack(f"<{tensor.dim()}q", *tensor.shape))
        data = tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
        h.update(struct.pack("<Q", len(data)) + data)
    return h.hexdigest()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _tensors(hypernet: Generator) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in hypernet.state_dict().items()}


def save_hypernet(
    hypernet: Generator,
    path: str | os.PathLike[str],
    extra: Mapping[str, Any] | None = None,
    files: Mapping[str, bytes] | None = None,
) -> Path:
    """Write a checkpoint directory atomically and return its path.

    ``extra`` is stored under ``"extra"`` in ``hypernet.json`` (e.g. the round number).
    Files that live beside the checkpoint in an existing ``path`` (e.g. a trainer's
    ``optimizer.safetensors``) are kept; ``files`` (``{name: bytes}``) writes or replaces
    such siblings in the same swap, so the weights and their siblings change together
    (:func:`hypernet.atomic.atomic_directory`: a crash leaves the old or the new set).
    """
    meta = {
        "format": FORMAT_VERSION,
        "architecture": hypernet.architecture,
        "config": hypernet.config.to_dict(),
        "spec": json.loads(hypernet.spec.to_json()),
        "lora_config": hypernet.lora_config,
        "client_ids": hypernet.client_ids,
        "extra": dict(extra or {}),
    }
    return _write_checkpoint(path, _tensors(hypernet), meta, files)


def remove_client_from_checkpoint(
    path: str | os.PathLike[str], client_id: str, files: Mapping[str, bytes] | None = None
) -> bool:
    """Rewrite checkpoint ``path`` without ``client_id`` (its tensors and its name), with
    ``files`` siblings written in the same atomic swap, as :func:`save_hypernet` would
    write the loaded generator after ``remove_client`` — the same bytes — but at the tensor
    level: no generator is built (a forget purges every checkpoint of a run). Returns
    ``False`` and writes nothing if the checkpoint does not hold the client.

    Raises
    ------
    CorruptFileError
        Missing, unparsable or tampered files (as :func:`load_hypernet`).
    CheckpointMismatchError
        The architecture tag is unknown, or the client is named without its tensors.
    """
    path = Path(path)
    meta = verify_checkpoint(path)
    if client_id not in meta["client_ids"]:
        return False
    names = checkpoint_architecture(meta).embedding_tensor_names(client_id)
    try:
        tensors = load_file(path / HYPERNET_WEIGHTS)
    except SafetensorError as exc:
        raise CorruptFileError(f"{path / HYPERNET_WEIGHTS} is not a valid safetensors file ({exc})") from None
    if names[0] not in tensors:
        raise CheckpointMismatchError(f"{path} names client {client_id!r} but holds no tensor {names[0]!r}")
    for name in names:
        tensors.pop(name, None)
    kept = {k: v for k, v in meta.items() if k != "weights_sha256"}
    kept["client_ids"] = [c for c in meta["client_ids"] if c != client_id]
    _write_checkpoint(path, tensors, kept, files)
    return True


def _write_checkpoint(
    path: str | os.PathLike[str],
    tensors: Mapping[str, torch.Tensor],
    meta: Mapping[str, Any],
    files: Mapping[str, bytes] | None,
) -> Path:
    """``tensors`` and ``meta`` (plus the weights' sha256) as a checkpoint folder, keeping
    the folder's other siblings and writing ``files``, in one atomic swap."""
    blob = save(dict(tensors))
    meta = dict(meta) | {"weights_sha256": hashlib.sha256(blob).hexdigest()}
    written = {HYPERNET_WEIGHTS: blob, HYPERNET_META: json.dumps(meta, indent=1, sort_keys=True).encode()}
    for name in files or {}:
        if name in written or Path(name).name != name or name.startswith("."):
            raise ConfigError(f"cannot write a sibling file named {name!r} beside a checkpoint")
    written |= dict(files or {})
    old = Path(path)

    def fill(tmp: Path) -> None:
        if old.is_dir():
            for sibling in old.iterdir():
                if sibling.is_file() and sibling.name not in written:
                    _carry_over(sibling, tmp / sibling.name)
        for name, data in written.items():
            (tmp / name).write_bytes(data)

    atomic_directory(path, fill)
    return Path(path)


def _carry_over(source: Path, target: Path) -> None:
    """Keep a sibling file in the new version of a folder (a hard link: no copy, same bytes)."""
    try:
        os.link(source, target)
    except OSError:  # a filesystem without hard links
        shutil.copy2(source, target)


def read_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed ``hypernet.json`` of a checkpoint directory.

    Raises
    ------
    CorruptFileError
        Missing or unparsable file, or an unsupported format version.
    """
    meta_path = Path(path) / HYPERNET_META
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise CorruptFileError(f"{meta_path} is missing: not a hypernetwork checkpoint") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptFileError(f"{meta_path} is not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise CorruptFileError(f"{meta_path}: unsupported format {found!r}")
    return meta


def verify_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """:func:`read_meta`, and check the weights file against the sha256 it records.

    Reads no tensors: a cheap check that :func:`load_hypernet` will find intact files.

    Raises
    ------
    CorruptFileError
        Missing or unparsable metadata, missing weights, or weights that do not match.
    """
    meta = read_meta(path)
    weights = Path(path) / HYPERNET_WEIGHTS
    try:
        digest = file_sha256(weights)
    except FileNotFoundError:
        raise CorruptFileError(f"{weights} is missing") from None
    if digest != meta.get("weights_sha256"):
        raise CorruptFileError(f"{weights} does not match the sha256 recorded in {HYPERNET_META}")
    return meta


def checkpoint_architecture(meta: Mapping[str, Any]) -> type[Generator]:
    """The generator class for a checkpoint's :func:`read_meta` data.

    Raises
    ------
    CheckpointMismatchError
        The tag names no registered generator (the message lists the known tags).
    """
    tag = meta.get("architecture", DEFAULT_ARCHITECTURE)  # untagged: written before tags existed
    cls = GENERATORS.get(tag) if isinstance(tag, str) else None
    if cls is None:
        raise CheckpointMismatchError(
            f"checkpoint generator architecture {tag!r} is not registered; known: {sorted(GENERATORS)}"
        )
    return cls


def load_hypernet(
    path: str | os.PathLike[str],
    spec: TargetSpec | None = None,
    device: str | torch.device = "cpu",
) -> Generator:
    """Load a checkpoint written by :func:`save_hypernet` as the generator it was saved from.

    The generator class comes from the checkpoint's architecture tag (see
    :data:`hypernet.generators.GENERATORS`); it satisfies :class:`~hypernet.generators.Generator`.

    Parameters
    ----------
    spec:
        The targets of the model it will drive; if given, a checkpoint built for other
        shapes raises :class:`CheckpointMismatchError` instead of failing later.

    Raises
    ------
    CorruptFileError
        Missing, unparsable or tampered files (the weights' sha256 is checked).
    CheckpointMismatchError
        The checkpoint does not fit ``spec``, or its architecture tag is unknown.
    """
    path = Path(path)
    meta = verify_checkpoint(path)
    cls = checkpoint_architecture(meta)
    weights = path / HYPERNET_WEIGHTS
    saved_spec = TargetSpec.from_json(json.dumps(meta["spec"]))
    if spec is not None:
        spec.check_compatible(saved_spec)
    hypernet = cls.from_config(saved_spec, meta["config"])
    hypernet.lora_config = meta.get("lora_config")
    try:
        tensors = load_file(weights)
    except SafetensorError as exc:
        raise CorruptFileError(f"{weights} is not a valid safetensors file ({exc})") from None
    for cid in meta["client_ids"]:
        hypernet.add_client(cid)
    try:
        hypernet.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise CheckpointMismatchError(f"{weights} does not fit its own metadata: {exc}") from None
    return hypernet.to(device)


def export_adapter(
    hypernet: Generator,
    client_id: str,
    path: str | os.PathLike[str],
    base_model_name_or_path: str | None = None,
) -> str:
    """Write ``client_id``'s adapter as a peft folder; return the adapter's :func:`adapter_hash`.

    Load it with ``PeftModel.from_pretrained(base_model, path)``.
    """
    from peft import LoraConfig

    if hypernet.lora_config is None:
        raise CheckpointMismatchError(
            "this generator has no LoRA config to export with; build it with "
            "HyperLoRA.from_peft_model(peft_model) or set hypernet.lora_config"
        )
    with torch.no_grad():
        adapter = {k: v.detach().to("cpu").contiguous() for k, v in hypernet.generate(client_id).items()}
    config = LoraConfig(**{k: v for k, v in hypernet.lora_config.items() if k != "peft_type"})
    if base_model_name_or_path is not None:
        config.base_model_name_or_path = base_model_name_or_path

    def fill(tmp: Path) -> None:
        config.save_pretrained(str(tmp))
        atomic_write_bytes(tmp / ADAPTER_WEIGHTS, save(adapter, metadata={"format": "pt"}))

    atomic_directory(path, fill)
    return adapter_hash(adapter)
