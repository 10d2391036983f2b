"""Salted commitments and roots computed off-chain exactly as the contract does."""

from __future__ import annotations

import struct

import pytest

from chaincode.merkle import EMPTY_ROOT
from hyperfed.ledger import (
    adapters_root,
    commit_embedding,
    commitments_root,
    hash_file,
    verify_commitment,
)
from hyperfed.ledger.commitment import SALT_BYTES, membership_proof, sha256_hex, verify_membership

VECTOR = struct.pack("<4f", 0.5, -1.0, 2.25, 0.0)


def test_commitment_opens_only_with_its_vector_and_salt():
    salt, commitment = commit_embedding(VECTOR)
    assert len(salt) == SALT_BYTES and len(commitment) == 64
    assert verify_commitment(VECTOR, salt, commitment)
    assert not verify_commitment(VECTOR[:-1] + b"\x01", salt, commitment)
    assert not verify_commitment(VECTOR, bytes(SALT_BYTES), commitment)
    assert not verify_commitment(VECTOR, b"short", commitment)


def test_fresh_salts_hide_equal_vectors_and_fixed_salts_reproduce():
    assert commit_embedding(VECTOR)[1] != commit_embedding(VECTOR)[1]
    salt = bytes(range(SALT_BYTES))
    assert commit_embedding(VECTOR, salt) == commit_embedding(VECTOR, salt)
    with pytest.raises(ValueError):
        commit_embedding(VECTOR, b"too short")


def test_roots_and_membership():
    digests = {"b": sha256_hex(b"b"), "a": sha256_hex(b"a")}
    assert commitments_root({}) == EMPTY_ROOT
    assert commitments_root(digests) == adapters_root(dict(reversed(digests.items())))
    index, path = membership_proof(digests, "b")
    assert verify_membership("b", digests["b"], index, 2, path, commitments_root(digests))
    assert not verify_membership("a", digests["b"], index, 2, path, commitments_root(digests))
    assert not verify_membership("a\x00", digests["a"], 0, 2, path, commitments_root(digests))


def test_hash_file_streams(tmp_path):
    data = bytes(range(256)) * 10_000
    (tmp_path / "f.bin").write_bytes(data)
    assert hash_file(tmp_path / "f.bin", chunk_size=4096) == sha256_hex(data)
