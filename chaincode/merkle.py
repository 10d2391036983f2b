"""A sha256 Merkle tree with inclusion proofs, exactly as RFC 6962 / RFC 9162 §2.1 define it.

Pure Python and dependency-free: the contract computes roots on-chain and ``hyperfed``
computes the same roots off-chain from the same functions.

Rules
-----
* Domain separation: ``leaf = sha256(0x00 || data)``, ``node = sha256(0x01 || left || right)``,
  so a leaf can never be passed off as an inner node (second-preimage attack).
* Empty set: the root is ``sha256(b"")``.
* Odd sizes: a tree over ``n`` leaves splits at ``k``, the largest power of two below ``n``
  (left subtree full, right subtree the rest). No leaf is ever duplicated, so ``[a, b, c]``
  and ``[a, b, c, c]`` have different roots (unlike Bitcoin's tree, CVE-2012-2459).
* Roots and proof nodes travel as lowercase hex strings.

Keyed sets (client id -> hex digest) are hashed in sorted key order with
:func:`keyed_leaf`, which binds each digest to its key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

__all__ = [
    "EMPTY_ROOT",
    "leaf_hash",
    "node_hash",
    "merkle_root",
    "inclusion_proof",
    "verify_inclusion",
    "keyed_leaf",
    "keyed_merkle_root",
    "keyed_inclusion_proof",
]

EMPTY_ROOT = hashlib.sha256(b"").hexdigest()
_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"


def leaf_hash(data: bytes) -> bytes:
    """Hash of one leaf: ``sha256(0x00 || data)``."""
    return hashlib.sha256(_LEAF_PREFIX + bytes(data)).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Hash of an inner node: ``sha256(0x01 || left || right)``."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def _split(n: int) -> int:
    """Largest power of two strictly smaller than ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


def _subtree_root(hashes: Sequence[bytes]) -> bytes:
    if len(hashes) == 1:
        return hashes[0]
    k = _split(len(hashes))
    return node_hash(_subtree_root(hashes[:k]), _subtree_root(hashes[k:]))


def merkle_root(leaves: Sequence[bytes]) -> str:
    """Root (hex) of the tree over ``leaves`` in the given order.

    Parameters
    ----------
    leaves
        Raw leaf data; each is hashed with :func:`leaf_hash`.
    """
    if not leaves:
        return EMPTY_ROOT
    return _subtree_root([leaf_hash(leaf) for leaf in leaves]).hex()


def _path(index: int, hashes: Sequence[bytes]) -> list[bytes]:
    if len(hashes) == 1:
        return []
    k = _split(len(hashes))
    if index < k:
        return _path(index, hashes[:k]) + [_subtree_root(hashes[k:])]
    return _path(index - k, hashes[k:]) + [_subtree_root(hashes[:k])]


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[str]:
    """Audit path (hex, bottom-up) proving ``leaves[index]`` is in :func:`merkle_root`.

    Raises
    ------
    IndexError
        If ``index`` is outside ``[0, len(leaves))``.
    """
    if not 0 <= index < len(leaves):
        raise IndexError(f"leaf index {index} outside a tree of {len(leaves)} leaves")
    return [h.hex() for h in _path(index, [leaf_hash(leaf) for leaf in leaves])]


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[str], root: str) -> bool:
    """Check an audit path (RFC 9162 §2.1.3.2). Never raises on malformed input."""
    if not 0 <= index < size:
        return False
    try:
        path = [bytes.fromhex(p) for p in proof]
    except (TypeError, ValueError):
        return False
    fn, sn, r = index, size - 1, leaf_hash(leaf)
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r.hex() == str(root).lower()


def keyed_leaf(key: str, digest_hex: str) -> bytes:
    """Leaf data binding a key to a hex digest: ``utf8(key) || 0x00 || bytes(digest)``.

    Raises
    ------
    ValueError
        If the key contains a NUL character or the digest is not hex.
    """
    if "\x00" in key:
        raise ValueError(f"key {key!r} contains a NUL character")
    return key.encode("utf-8") + b"\x00" + bytes.fromhex(digest_hex)


def keyed_merkle_root(digests: Mapping[str, str]) -> str:
    """Root over ``{key: hex digest}`` in sorted key order (code-point order)."""
    return merkle_root([keyed_leaf(k, digests[k]) for k in sorted(digests)])


def keyed_inclusion_proof(digests: Mapping[str, str], key: str) -> tuple[int, list[str]]:
    """``(index, audit path)`` of ``key`` in :func:`keyed_merkle_root` of ``digests``.

    Raises
    ------
    KeyError
        If ``key`` is not in ``digests``.
    """
    keys = sorted(digests)
    if key not in digests:
        raise KeyError(key)
    index = keys.index(key)
    return index, inclusion_proof([keyed_leaf(k, digests[k]) for k in keys], index)
