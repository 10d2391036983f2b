"""The HyperFed Fabric contract (Python, fabric-chaincode-python 2.5.4) and its Merkle tree.

``chaincode.merkle`` is pure Python and imports nothing from Fabric, so ``hyperfed`` can
use it cheaply; :class:`HyperFedContract` is loaded on first access because importing the
Fabric API is slow and needs the logging workaround of :mod:`chaincode.fabric_compat`.
The contract never imports torch or hyperfed.
"""

from __future__ import annotations

from typing import Any

__all__ = ["HyperFedContract"]


def __getattr__(name: str) -> Any:
    if name == "HyperFedContract":
        from chaincode.contract import HyperFedContract

        return HyperFedContract
    raise AttributeError(f"module 'chaincode' has no attribute {name!r}")
