"""The RFC 6962 Merkle tree: known roots, proofs for every index, and forgeries refused."""

from __future__ import annotations

import hashlib

import pytest

from chaincode.merkle import (
    EMPTY_ROOT,
    inclusion_proof,
    keyed_inclusion_proof,
    keyed_leaf,
    keyed_merkle_root,
    leaf_hash,
    merkle_root,
    verify_inclusion,
)

# Test vectors of RFC 6962 trees (certificate-transparency / trillian test data).
CT_LEAVES = [
    bytes.fromhex(x)
    for x in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f")
]
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


@pytest.mark.parametrize("size", range(1, 9))
def test_roots_match_the_rfc6962_vectors(size):
    assert merkle_root(CT_LEAVES[:size]) == CT_ROOTS[size - 1]


def test_empty_and_single_trees():
    assert merkle_root([]) == EMPTY_ROOT == hashlib.sha256(b"").hexdigest()
    assert merkle_root([b"x"]) == leaf_hash(b"x").hex()
    assert inclusion_proof([b"x"], 0) == []
    assert verify_inclusion(b"x", 0, 1, [], merkle_root([b"x"]))


def test_odd_sets_never_duplicate_a_leaf():
    abc = [b"a", b"b", b"c"]
    assert merkle_root(abc) != merkle_root(abc + [b"c"])


def test_leaves_and_nodes_are_domain_separated():
    left, right = leaf_hash(b"a"), leaf_hash(b"b")
    # presenting an inner node's preimage as a leaf does not reproduce the root
    assert merkle_root([left + right]) != merkle_root([b"a", b"b"])


@pytest.mark.parametrize("size", list(range(1, 18)) + [31, 32, 33])
def test_every_proof_verifies_and_no_other(size):
    leaves = [f"leaf-{i}".encode() for i in range(size)]
    root = merkle_root(leaves)
    for index in range(size):
        proof = inclusion_proof(leaves, index)
        assert verify_inclusion(leaves[index], index, size, proof, root)
        assert not verify_inclusion(b"forged", index, size, proof, root)
        if size > 1:
            assert not verify_inclusion(leaves[index], (index + 1) % size, size, proof, root)
        if proof:
            bad = [("0" * 64 if i == 0 else p) for i, p in enumerate(proof)]
            assert not verify_inclusion(leaves[index], index, size, bad, root)
            assert not verify_inclusion(leaves[index], index, size, proof[:-1], root)


def test_malformed_proofs_are_rejected_not_raised():
    assert not verify_inclusion(b"a", 0, 2, ["zz"], EMPTY_ROOT)
    assert not verify_inclusion(b"a", 5, 2, [], EMPTY_ROOT)
    with pytest.raises(IndexError):
        inclusion_proof([b"a"], 1)


def test_keyed_roots_bind_keys_and_ignore_insertion_order():
    digests = {"bob": "11" * 32, "alice": "22" * 32, "carol": "33" * 32}
    assert keyed_merkle_root(digests) == keyed_merkle_root(dict(sorted(digests.items())))
    swapped = {"bob": "22" * 32, "alice": "11" * 32, "carol": "33" * 32}
    assert keyed_merkle_root(swapped) != keyed_merkle_root(digests)
    index, path = keyed_inclusion_proof(digests, "bob")
    assert index == 1
    assert verify_inclusion(keyed_leaf("bob", digests["bob"]), index, 3, path, keyed_merkle_root(digests))
    with pytest.raises(ValueError):
        keyed_leaf("a\x00b", "00")
    with pytest.raises(KeyError):
        keyed_inclusion_proof(digests, "dave")
