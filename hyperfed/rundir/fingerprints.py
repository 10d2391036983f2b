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

* **Checkpoint file digests** — :func:`checkpoint_file_digests`: what the shared-weights hash
  does not cover, recorded with ``record_checkpoint_files``: ``config`` (sha256 of the
  canonical generator description in ``hypernet.json``: format, architecture, config,
  spec, LoRA config — not its client list or ``extra``, which a forget changes),
  ``optimizer/shared`` (every non-client entry of ``optimizer.safetensors``) and
  ``optimizer/client/<id>`` (one client's entries, so purging one client leaves the
  others' digests valid), and ``policy`` (sha256 of the canonical shared-weight policy
  stored in ``hypernet.json``'s ``extra``, :func:`run_policy`: so the ledger holds, with
  every checkpoint, which policy — and so which forget guarantee — the run trained under).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from hyperfed.errors import CorruptFileError
from hyperfed.ledger.commitment import commit_embedding
from hyperfed.rundir import OPTIMIZER_FILE
from hypernet import Generator, TargetSpec, adapter_hash
from hypernet.io import HYPERNET_WEIGHTS, checkpoint_architecture, read_meta
from hypernet.trainer_state import CLIENT_PREFIX, client_of_key, clients_in_state

__all__ = [
    "shared_state",
    "shared_weights_hash",
    "embedding_bytes",
    "embedding_commitment",
    "CheckpointTensors",
    "read_checkpoint_tensors",
    "optimizer_clients",
    "CONFIG_PART",
    "OPTIMIZER_PART",
    "config_digest",
    "checkpoint_file_digests",
    "POLICY_PART",
    "POLICY_KEY",
    "run_policy",
    "policy_digest",
]

CONFIG_PART = "config"
OPTIMIZER_PART = "optimizer/"  # + "shared" or "client/<client id>"
_CONFIG_FIELDS = ("format", "architecture", "config", "spec", "lora_config")
POLICY_PART = "policy"
POLICY_KEY = "policy"  # hypernet.json: {"extra": {"policy": run_policy(...)}}
_DP_FIELDS = ("dp_noise_multiplier", "dp_clip", "dp_delta", "sample_rate", "dp_scope")  # what dp's guarantee depends on


def run_policy(config: Mapping[str, object] | None) -> dict[str, object]:
    """The shared-weight policy of a run config (``run.json``'s dict): the fields its forget
    guarantee depends on (``dp``: noise, clip, δ and sampling rate too). A config without a
    federation section is the ``shared`` default."""
    federation = config.get("federation") if isinstance(config, Mapping) else None
    federation = federation if isinstance(federation, Mapping) else {}
    policy = str(federation.get("shared_policy", "shared"))
    out: dict[str, object] = {
        "shared_policy": policy,
        "client_residual": bool(federation.get("client_residual", False)),
    }
    if policy == "dp":
        out |= {name: federation.get(name) for name in _DP_FIELDS}
    return out


def policy_digest(policy: Mapping[str, object]) -> str:
    """sha256 (hex) of a :func:`run_policy` dict, canonical JSON."""
    return hashlib.sha256(json.dumps(dict(policy), sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def shared_state(hypernet: Generator) -> dict[str, torch.Tensor]:
    """The hypernetwork's state dict without client embeddings (CPU, contiguous)."""
    clients = {n for cid in hypernet.client_ids for n in hypernet.embedding_tensor_names(cid)}
    return {name: t.detach().to("cpu").contiguous() for name, t in hypernet.state_dict().items() if name not in clients}


def shared_weights_hash(hypernet: Generator) -> str:
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


def _embedding_name(generator: type[Generator], client_id: str) -> str:
    """The tensor holding ``client_id``'s embedding (what its commitment is over): the first
    of the generator's client tensors (the others, e.g. a residual adapter, follow it)."""
    names = generator.embedding_tensor_names(client_id)
    if not names:
        raise CorruptFileError(f"generator {generator.architecture!r} names no tensor for client {client_id!r}")
    return names[0]


def read_checkpoint_tensors(folder: str | os.PathLike, also_look_for: Iterable[str] = ()) -> CheckpointTensors:
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
    try:  # names come from the architecture alone: no model is built
        generator = checkpoint_architecture(meta)
        spec = TargetSpec.from_json(json.dumps(meta["spec"]))
        shared_names = set(generator.shared_tensor_names(spec, meta["config"]))
        listed = [str(c) for c in meta["client_ids"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptFileError(f"{folder / 'hypernet.json'} does not describe a known generator ({exc})") from None
    names = {cid: _embedding_name(generator, cid) for cid in dict.fromkeys([*listed, *also_look_for])}
    # Every tensor of a listed client (its residual too); a forgotten client's leftovers stay unexpected.
    owned = {n for cid in listed for n in generator.embedding_tensor_names(cid)} | set(names.values())
    return CheckpointTensors(
        folder=folder,
        listed_clients=tuple(listed),
        shared={k: tensors[k] for k in sorted(shared_names) if k in tensors},
        embeddings={cid: tensors[n] for cid, n in names.items() if n in tensors},
        missing_shared=tuple(sorted(shared_names - set(tensors))),
        unexpected=tuple(sorted(set(tensors) - shared_names - owned)),
    )


def optimizer_clients(folder: str | os.PathLike) -> set[str]:
    """Client ids with optimizer state in a checkpoint's ``optimizer.safetensors``.

    Entries are named ``client/<client id>/<state key>`` (see ``hypernet.trainer_state``);
    an absent file has none.
    """
    path = Path(folder) / OPTIMIZER_FILE
    if not path.exists():
        return set()
    try:
        with safe_open(str(path), framework="pt") as handle:
            keys = list(handle.keys())
    except SafetensorError as exc:
        raise CorruptFileError(f"{path} is not a valid safetensors file ({exc})") from None
    return clients_in_state(keys)


def config_digest(meta: Mapping[str, object]) -> str:
    """sha256 (hex) of a checkpoint's generator description (``hypernet.json`` without its
    client list, ``extra`` and weights digest), canonical JSON."""
    body = {name: meta.get(name) for name in _CONFIG_FIELDS}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def checkpoint_file_digests(folder: str | os.PathLike) -> dict[str, str]:
    """``{part: sha256}`` of a checkpoint folder's config and optimizer state (see the module docstring).

    Raises
    ------
    CorruptFileError
        ``hypernet.json`` or ``optimizer.safetensors`` is unreadable.
    """
    folder = Path(folder)
    meta = read_meta(folder)
    parts = {CONFIG_PART: config_digest(meta)}
    extra = meta.get("extra")
    if isinstance(extra, Mapping) and isinstance(extra.get(POLICY_KEY), Mapping):
        parts[POLICY_PART] = policy_digest(extra[POLICY_KEY])
    path = folder / OPTIMIZER_FILE
    if not path.exists():
        return parts
    try:
        state = load_file(path)
    except SafetensorError as exc:
        raise CorruptFileError(f"{path} is not a valid safetensors file ({exc})") from None
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        client_id = client_of_key(key) if key.startswith(CLIENT_PREFIX) else None
        owner = "shared" if client_id is None else f"client/{client_id}"
        groups.setdefault(owner, {})[key] = tensor
    for owner, tensors in sorted(groups.items()):
        parts[OPTIMIZER_PART + owner] = _tensors_digest(tensors)
    return parts


def _tensors_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 over sorted (name, dtype, shape, little-endian bytes); scalars included
    (:func:`hypernet.adapter_hash` covers adapters, which have none)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").contiguous()
        head = json.dumps([name, str(tensor.dtype), list(tensor.shape)]).encode()
        digest.update(len(head).to_bytes(4, "little") + head)
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()
