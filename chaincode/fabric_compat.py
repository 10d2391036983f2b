"""The one place that imports ``fabric-chaincode-python`` 2.5.4, with its logging tamed.

Importing ``fabric_chaincode_python`` runs ``logging.basicConfig(level=DEBUG)`` on the root
logger and moves the ``asyncio`` logger's handlers onto a background queue listener; its
stub then logs every key *and value* written at INFO through the ``asyncio`` logger
(DESIGN §6, known defects). A library must not reconfigure its host's logging, and values
on a ledger are nobody's log output, so this module:

1. snapshots the root logger before the import and restores it afterwards
   (handlers and level), removing what ``basicConfig`` added;
2. detaches the queue handler from the ``asyncio`` logger and stops its listener thread;
3. installs a filter on the ``asyncio`` logger that drops the shim's records below ERROR,
   so genuine asyncio warnings still get through.

Everything else in ``chaincode`` (and ``hyperfed``) imports the Fabric API from here.
"""

from __future__ import annotations

import logging
import os
import sys

__all__ = [
    "Contract",
    "ContractChaincode",
    "TransactionContextInterface",
    "ChaincodeStubInterface",
    "ResponseCode",
    "quiet_fabric_logging",
]

_SHIM_LOGGING = "fabric_chaincode_python.fabric_shim.logging"
# The format string fabric's basicConfig call installs: how we recognise its handler when
# the package was imported before this module could take a snapshot.
_FABRIC_FORMAT = "%(asctime)s %(levelname)s %(message)s"


class _DropShimRecords(logging.Filter):
    """Drop records emitted from inside ``fabric_chaincode_python`` below ERROR."""

    def __init__(self, package_dir: str) -> None:
        super().__init__("hyperfed-fabric-shim")
        self._package_dir = package_dir

    def filter(self, record: logging.LogRecord) -> bool:
        from_shim = record.pathname.startswith(self._package_dir)
        return not from_shim or record.levelno >= logging.ERROR


def quiet_fabric_logging(root_handlers: list[logging.Handler] | None = None, root_level: int | None = None) -> None:
    """Undo what importing ``fabric_chaincode_python`` did to logging. Idempotent.

    Parameters
    ----------
    root_handlers, root_level
        The root logger's handlers and level from before the import. When unknown (the
        package was imported elsewhere first) the handler fabric added is recognised by
        its format string and removed, and a DEBUG root level is reset to WARNING.
    """
    import fabric_chaincode_python
    import fabric_chaincode_python.fabric_shim.logging as shim_logging

    root = logging.getLogger()
    if root_handlers is not None:
        for handler in list(root.handlers):
            if handler not in root_handlers:
                root.removeHandler(handler)
        root.setLevel(logging.WARNING if root_level is None else root_level)
    else:
        for handler in list(root.handlers):
            fmt = getattr(handler.formatter, "_fmt", None)
            if isinstance(handler, logging.StreamHandler) and fmt == _FABRIC_FORMAT:
                root.removeHandler(handler)
        if root.level == logging.DEBUG:
            root.setLevel(logging.WARNING)

    shim_logger = shim_logging.LOGGER
    for handler in list(shim_logger.handlers):
        if isinstance(handler, shim_logging.LocalQueueHandler):
            shim_logger.removeHandler(handler)
    listener = getattr(shim_logging, "_QUEUE_LISTENER", None)
    if listener is not None and getattr(listener, "_thread", None) is not None:
        listener.stop()
    package_dir = os.path.dirname(fabric_chaincode_python.__file__)
    if not any(isinstance(f, _DropShimRecords) for f in shim_logger.filters):
        shim_logger.addFilter(_DropShimRecords(package_dir))


def _import_fabric() -> None:
    if _SHIM_LOGGING in sys.modules:
        quiet_fabric_logging()
        return
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    import fabric_chaincode_python.fabric_shim.logging  # noqa: F401  (the damaging import)

    quiet_fabric_logging(handlers, level)


_import_fabric()

from fabric_chaincode_python.fabric_contract_api import (  # noqa: E402
    Contract,
    ContractChaincode,
    TransactionContextInterface,
)
from fabric_chaincode_python.fabric_shim.interfaces import ChaincodeStubInterface  # noqa: E402
from fabric_chaincode_python.fabric_shim.response import ResponseCode  # noqa: E402
