"""What the ledger knows of a hypernetwork, computed from memory or read back from disk.

* **Shared-weights hash** — :func:`hypernet.adapter_hash` over the hypernetwork's state
  dict *without* client embeddings (trunk, heads, base adapters, layer/type/chunk
  embeddings). It identifies a checkpoint; it does not change when a client's embedding
  is removed.
* **Embedding commitment** — :func:`~hyperfed.ledger.commitment.commit_embedding` over the
  embedding's canonical bytes (float32, little-endian, contiguous) with the client's salt.

:func:`read_checkpoint_tensors` splits a checkpoint folder written by
:func:`hypernet.save_hypernet` into the same two parts, so the audit recomputes exactly
what the recorder computed, straight from the files.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from hypernet import HyperLoRA, HyperLoRAConfig, TargetSpec, adapter_hash
from hypernet.io import HYPERNET_WEIGHTS, read_meta

from hyperfed.errors import CorruptFileError
from hyperfed.ledger.commitment import commit_embedding
from hyperfed.rundir import OPTIMIZER_FILE

__all__ = [
    "shared_state",
    "shared_weights_hash",
    "embedding_bytes",
    "embedding_commitment",
    "CheckpointTensors",
    "read_checkpoint_tensors",
    "optimizer_clients",
]


def _client_param_ids(hypernet: HyperLoRA) -> set[int]:
    return {id(p) for p in hypernet.clients.parameters()}


def shared_state(hypernet: HyperLoRA) -> dict[str, torch.Tensor]:
    """The hypernetwork's state dict without client embeddings (CPU, contiguous)."""
    clients = _client_param_ids(hypernet)
    return {name: t.detach().to("cpu").contiguous()
            for name, t in hypernet.state_dict(keep_vars=True).items() if id(t) not in clients}


def shared_weights_hash(hypernet: HyperLoRA) -> str:
    """Hex sha256 of the shared weights: :func:`hypernet.adapter_hash` of :func:`shared_state`.

    Canonical (sorted keys, dtype, shape, little-endian bytes), so the same weights give the
    same hash in memory, in a checkpoint file, on any device.
    """
    return adapter_hash(shared_state(hypernet))


def embedding_bytes(vector: torch.Tensor) -> bytes:
    """Canonical bytes of an embedding: float32, little-endian, contiguous."""
    array = vector.detach().to("cpu", torch.float32).contiguous().numpy()
    return array.astype("<f4", copy=False).tobytes()


def embedding_commitment(vector: torch.Tensor, salt: bytes) -> str:
    """The salted commitment (hex) of one embedding."""
    return commit_embedding(embedding_bytes(vector), salt)[1]


@dataclass(frozen=True)
class CheckpointTensors:
    """A checkpoint folder split into the parts the ledger commits to.

    Attributes
    ----------
    listed_clients
        Client ids named by ``hypernet.json``.
    shared
        Shared tensors (hash them with :func:`hypernet.adapter_hash`).
    embeddings
        Client id -> embedding, for every known client whose tensor is in the file (the
        listed ones, plus any ``also_look_for`` id found there).
    missing_shared
        Shared tensors the architecture needs but the file lacks.
    unexpected
        Tensor names that are neither shared weights nor a known client's embedding.
    """

    folder: Path
    listed_clients: tuple[str, ...]
    shared: Mapping[str, torch.Tensor]
    embeddings: Mapping[str, torch.Tensor]
    missing_shared: tuple[str, ...]
    unexpected: tuple[str, ...]

    @property
    def shared_hash(self) -> str:
        return adapter_hash(self.shared)


_SKELETONS: dict[str, HyperLoRA] = {}


def _skeleton(meta: Mapping[str, Any]) -> HyperLoRA:
    """An untrained HyperLoRA of the checkpoint's architecture: it names the tensors."""
    key = json.dumps([meta["spec"], meta["config"]], sort_keys=True)
    if key not in _SKELETONS:
        spec = TargetSpec.from_json(json.dumps(meta["spec"]))
        with torch.no_grad():
            _SKELETONS.clear()  # keep one: audits read one architecture at a time
            _SKELETONS[key] = HyperLoRA(spec, HyperLoRAConfig.from_dict(meta["config"]))
    return _SKELETONS[key]


def _embedding_names(skeleton: HyperLoRA, client_ids: Iterable[str]) -> dict[str, str]:
    """State-dict name of each client's embedding, by the hypernetwork's own naming."""
    for cid in client_ids:
        if cid not in skeleton.clients:
            with torch.no_grad():
                skeleton.add_client(cid, torch.zeros(skeleton.config.client_dim))
    names = {id(p): n for n, p in skeleton.named_parameters()}
    return {cid: names[id(skeleton.clients.parameter(cid))] for cid in client_ids}


def read_checkpoint_tensors(folder: str | os.PathLike,
                            also_look_for: Iterable[str] = ()) -> CheckpointTensors:
    """Read a checkpoint folder and split its tensors into shared weights and embeddings.

    Parameters
    ----------
    folder
        A folder written by :func:`hypernet.save_hypernet`.
    also_look_for
        Client ids not listed in ``hypernet.json`` whose embedding should still be found
        if present (for example forgotten clients, which must be absent).

    Raises
    ------
    CorruptFileError
        Missing or unreadable ``hypernet.json`` / ``hypernet.safetensors``.
    """
    folder = Path(folder)
    meta = read_meta(folder)
    weights = folder / HYPERNET_WEIGHTS
    try:
        tensors = load_file(weights)
    except FileNotFoundError:
        raise CorruptFileError(f"{weights} is missing") from None
    except SafetensorError as exc:
        raise CorruptFileError(f"{weights} is not a valid safetensors file ({exc})") from None
    try:
        skeleton = _skeleton(meta)
        listed = [str(c) for c in meta["client_ids"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptFileError(
            f"{folder / 'hypernet.json'} does not describe a HyperLoRA ({exc})") from None
    names = _embedding_names(skeleton, dict.fromkeys([*listed, *also_look_for]))
    clients = _client_param_ids(skeleton)
    shared_names = {n for n, t in skeleton.state_dict(keep_vars=True).items()
                    if id(t) not in clients}
    return CheckpointTensors(
        folder=folder,
        listed_clients=tuple(listed),
        shared={k: tensors[k] for k in sorted(shared_names) if k in tensors},
        embeddings={cid: tensors[n] for cid, n in names.items() if n in tensors},
        missing_shared=tuple(sorted(shared_names - set(tensors))),
        unexpected=tuple(sorted(set(tensors) - shared_names - set(names.values()))),
    )


def optimizer_clients(folder: str | os.PathLike) -> set[str]:
    """Client ids with optimizer state in a checkpoint's ``optimizer.safetensors``.

    Entries are named ``client/<client id>/<state key>`` (see ``hyperfed.rundir``); an
    absent file has none.
    """
    path = Path(folder) / OPTIMIZER_FILE
    if not path.exists():
        return set()
    try:
        with safe_open(str(path), framework="pt") as handle:
            keys = list(handle.keys())
    except SafetensorError as exc:
        raise CorruptFileError(f"{path} is not a valid safetensors file ({exc})") from None
    return {k[len("client/"):].rsplit("/", 1)[0] for k in keys if k.startswith("client/")}
