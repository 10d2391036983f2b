"""The writer identity that signs the embedded ledger's blocks, and where its key lives.

Every block of an :class:`~hyperfed.ledger.embedded.EmbeddedLedger` is signed (ECDSA P-256,
low-S, the Gateway client's :class:`~hyperfed.ledger.gateway.identity.SigningIdentity`) by
the ledger's writer. The key must **not** live in the run directory — whoever holds the
folder could then re-sign a forged chain — so it comes from:

1. a configured identity folder (``LedgerSettings.identity``, ``identity=`` of
   :class:`EmbeddedLedger`): ``cert.pem`` + ``key.pem``, or an MSP folder with
   ``signcerts/`` and ``keystore/`` (what Fabric's ``cryptogen`` or a CA writes);
2. otherwise a **per-user dev identity**, created on first use under
   ``$HYPERFED_HOME/identities/<MSP>/`` (default ``~/.config/hyperfed``): a self-signed
   certificate (public) and its key (mode 0600, folder 0700).

The certificate is public: it is recorded in the ledger file, and an auditor pins it with
``hyperfed audit RUN --trust-cert CERT.pem`` (for the dev identity:
``$HYPERFED_HOME/identities/<MSP>/cert.pem``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509

from hyperfed.errors import ConfigError

if TYPE_CHECKING:  # signing pulls the Gateway package (gRPC); verifying a chain must not
    from hyperfed.ledger.gateway.identity import SigningIdentity

__all__ = [
    "HOME_ENV",
    "hyperfed_home",
    "dev_identity_dir",
    "dev_identity",
    "writer_identity",
    "load_certificate",
    "certificate_fingerprint",
]

log = logging.getLogger(__name__)

HOME_ENV = "HYPERFED_HOME"
CERT_FILE, KEY_FILE = "cert.pem", "key.pem"


def hyperfed_home() -> Path:
    """``$HYPERFED_HOME``, else ``~/.config/hyperfed``."""
    configured = os.environ.get(HOME_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".config" / "hyperfed"


def dev_identity_dir(msp_id: str) -> Path:
    """Where the per-user dev identity of ``msp_id`` lives."""
    if not msp_id or "/" in msp_id or msp_id.startswith("."):
        raise ConfigError(f"MSP id {msp_id!r} cannot name an identity folder: use letters, digits, '-' or '_'")
    return hyperfed_home() / "identities" / msp_id


def _write_private(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 from the start (never readable by others, even briefly)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def dev_identity(msp_id: str) -> SigningIdentity:
    """The per-user dev identity of ``msp_id``, created (once, under a file lock) if missing."""
    from filelock import FileLock

    from hyperfed.ledger.devnet.pki import self_signed_identity
    from hyperfed.ledger.gateway.identity import load_identity

    folder = dev_identity_dir(msp_id)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    cert, key = folder / CERT_FILE, folder / KEY_FILE
    with FileLock(str(folder / ".lock")):
        if not (cert.exists() and key.exists()):
            issued = self_signed_identity(msp_id, f"hyperfed-dev-writer@{msp_id}")
            _write_private(key, issued.key_pem)
            _write_private(cert, issued.cert_pem)
            cert.chmod(0o644)
            log.info("created the dev ledger identity of %s in %s", msp_id, folder)
    if key.stat().st_mode & 0o077:
        log.warning("%s is readable by other users: chmod 600 it", key)
    return load_identity(msp_id, cert, key)


def writer_identity(msp_id: str, folder: str | os.PathLike[str] | None = None) -> SigningIdentity:
    """The identity that signs blocks: from ``folder`` if given, else :func:`dev_identity`.

    Parameters
    ----------
    msp_id
        The writer MSP.
    folder
        ``cert.pem`` + ``key.pem``, or an MSP folder (``signcerts/`` + ``keystore/``).

    Raises
    ------
    ConfigError
        The folder holds no readable identity.
    """
    from hyperfed.ledger.gateway.identity import load_identity

    if folder is None or str(folder) == "":
        return dev_identity(msp_id)
    root = Path(folder).expanduser()
    if (root / "signcerts").is_dir():
        return load_identity(msp_id, root / "signcerts", root / "keystore")
    if not (root / CERT_FILE).is_file() or not (root / KEY_FILE).is_file():
        raise ConfigError(f"ledger identity {root} must hold {CERT_FILE} and {KEY_FILE} (or signcerts/ and keystore/)")
    return load_identity(msp_id, root / CERT_FILE, root / KEY_FILE)


def load_certificate(cert: str | os.PathLike[str] | bytes | x509.Certificate) -> x509.Certificate:
    """A certificate from a PEM file path, PEM bytes or an ``x509.Certificate``.

    Raises
    ------
    ConfigError
        Not a readable PEM certificate.
    """
    if isinstance(cert, x509.Certificate):
        return cert
    try:
        data = cert if isinstance(cert, bytes) else Path(cert).read_bytes()
        return x509.load_pem_x509_certificate(data)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the certificate {cert!r}: {exc} — pass a PEM certificate file") from None


def certificate_fingerprint(cert: x509.Certificate) -> str:
    """``sha256:<first 16 hex>`` of the certificate, for messages."""
    from cryptography.hazmat.primitives import hashes

    return "sha256:" + cert.fingerprint(hashes.SHA256()).hex()[:16]
