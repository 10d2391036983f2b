"""Commitments and digests that go on the ledger (pure maths, no I/O but file hashing).

A client's embedding is never published. Its **commitment** is
``sha256("hyperfed/embedding-commitment/v1" || 0x00 || salt || embedding bytes)`` with a
fresh 32-byte random salt. The salt is a secret: keep it off-chain, next to the
embedding, and delete both when the client is forgotten — without the salt the
commitment reveals nothing, even to someone who guesses the embedding.

Roots over many clients use :func:`chaincode.merkle.keyed_merkle_root` (sorted by client
id, each leaf binding the id to its digest), exactly as the contract recomputes them.

Embedding bytes must be canonical for the commitment to be re-checkable: for example
``tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping
from pathlib import Path

from chaincode.merkle import keyed_inclusion_proof, keyed_leaf, keyed_merkle_root, verify_inclusion

__all__ = [
    "SALT_BYTES",
    "commit_embedding",
    "verify_commitment",
    "sha256_hex",
    "hash_file",
    "commitments_root",
    "adapters_root",
    "membership_proof",
    "verify_membership",
]

SALT_BYTES = 32
_DOMAIN = b"hyperfed/embedding-commitment/v1\x00"


def _commitment(vector_bytes: bytes, salt: bytes) -> str:
    return hashlib.sha256(_DOMAIN + salt + bytes(vector_bytes)).hexdigest()


def commit_embedding(vector_bytes: bytes, salt: bytes | None = None) -> tuple[bytes, str]:
    """Salted commitment to an embedding.

    Parameters
    ----------
    vector_bytes
        Canonical bytes of the embedding (see the module docstring).
    salt
        ``SALT_BYTES`` random bytes; a fresh one is drawn when omitted.

    Returns
    -------
    (salt, commitment)
        The secret salt (store it off-chain) and the hex commitment (put it on-chain).
    """
    if salt is None:
        salt = os.urandom(SALT_BYTES)
    if not isinstance(salt, (bytes, bytearray)) or len(salt) != SALT_BYTES:
        raise ValueError(f"salt must be {SALT_BYTES} bytes, got {salt!r:.40}")
    return bytes(salt), _commitment(vector_bytes, bytes(salt))


def verify_commitment(vector_bytes: bytes, salt: bytes, commitment: str) -> bool:
    """Whether ``commitment`` opens to ``vector_bytes`` with ``salt`` (constant time)."""
    if not isinstance(salt, (bytes, bytearray)) or len(salt) != SALT_BYTES:
        return False
    return hmac.compare_digest(_commitment(vector_bytes, bytes(salt)), str(commitment).lower())


def sha256_hex(data: bytes) -> str:
    """Hex sha256 of ``data``: the form of every hash on the ledger."""
    return hashlib.sha256(data).hexdigest()


def hash_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def commitments_root(commitments: Mapping[str, str]) -> str:
    """Merkle root over ``{client_id: commitment}``: the root the contract computes and
    stores for ``record_checkpoint`` / ``record_forget``."""
    return keyed_merkle_root(commitments)


def adapters_root(adapter_hashes: Mapping[str, str]) -> str:
    """Merkle root over ``{client_id: adapter hash}`` — ``record_forget``'s adapters root."""
    return keyed_merkle_root(adapter_hashes)


def membership_proof(digests: Mapping[str, str], client_id: str) -> tuple[int, list[str]]:
    """``(index, audit path)`` proving ``client_id``'s digest is in the keyed root."""
    return keyed_inclusion_proof(digests, client_id)


def verify_membership(client_id: str, digest: str, index: int, size: int, path: list[str], root: str) -> bool:
    """Check a keyed inclusion proof (for example one returned by the ledger)."""
    try:
        leaf = keyed_leaf(client_id, digest)
    except ValueError:
        return False
    return verify_inclusion(leaf, index, size, path, root)
