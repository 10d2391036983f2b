"""The result of :func:`hyperfed.rundir.audit.audit_run`: findings, a verdict, JSON and a table."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

from hyperfed.errors import TamperDetectedError
from hyperfed.render import format_table

__all__ = ["Finding", "AuditReport", "render", "STATUSES", "FAILING"]

STATUSES = ("match", "mismatch", "missing", "forgotten")
FAILING = ("mismatch", "missing")


@dataclass(frozen=True)
class Finding:
    """One thing the audit checked.

    Attributes
    ----------
    check
        What was checked: ``ledger``, ``checkpoint``, ``embedding``, ``adapter``,
        ``client``, ``salt`` or ``outbox``.
    status
        ``match`` (recomputed = recorded), ``mismatch`` (it differs: tampering or a bug),
        ``missing`` (a file or a record that should exist does not) or ``forgotten`` (a
        forgotten client, correctly erased).
    culprit
        Where to look: a path relative to the run directory
        (``adapters/round-0001/alice.safetensors``) or a ledger location
        (``ledger.db: block 3``, ``ledger.db: state 'client/bob'``, ``ledger: …``).
    message
        What was compared and what was found.
    """

    check: str
    status: str
    culprit: str
    message: str

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"Finding.status must be one of {STATUSES}, got {self.status!r}")

    @property
    def failed(self) -> bool:
        return self.status in FAILING


@dataclass(frozen=True)
class AuditReport:
    """Everything :func:`hyperfed.rundir.audit.audit_run` found. ``ok`` iff nothing failed.

    Attributes
    ----------
    run_dir
        The audited run directory.
    ledger
        Which ledger was read (a path or URL).
    findings
        Every check, in the order it ran.
    forgotten
        Clients the ledger records as forgotten.
    notes
        What the audit could not check, and why (e.g. no chain verification on Fabric).
    """

    run_dir: str
    ledger: str
    findings: tuple[Finding, ...]
    forgotten: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not any(f.failed for f in self.findings)

    def failures(self) -> list[Finding]:
        return [f for f in self.findings if f.failed]

    def culprits(self) -> list[str]:
        """Culprits of the failed findings, first occurrence first."""
        return list(dict.fromkeys(f.culprit for f in self.failures()))

    def counts(self) -> dict[str, int]:
        counted = Counter(f.status for f in self.findings)
        return {status: counted.get(status, 0) for status in STATUSES}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``json.dumps(report.to_dict())``)."""
        return {
            "ok": self.ok,
            "run_dir": self.run_dir,
            "ledger": self.ledger,
            "counts": self.counts(),
            "forgotten": list(self.forgotten),
            "notes": list(self.notes),
            "findings": [asdict(f) for f in self.findings],
        }

    def raise_if_failed(self) -> None:
        """Raise :class:`~hyperfed.errors.TamperDetectedError` naming every culprit."""
        if not self.ok:
            raise TamperDetectedError(
                f"audit of {self.run_dir} FAILED: " + "; ".join(f"{f.culprit}: {f.message}" for f in self.failures())
            )


def render(report: AuditReport, *, verbose: bool = False) -> str:
    """A plain-text report for the terminal.

    Failures and forgotten clients are listed one per row; matches are summarised per
    check unless ``verbose``.
    """
    counts = report.counts()
    verdict = "PASSED" if report.ok else "FAILED"
    lines = [
        f"audit {verdict}: {report.run_dir}",
        f"ledger: {report.ledger}",
        "  ".join(f"{counts[s]} {s}" for s in STATUSES),
        "",
    ]
    shown = [f for f in report.findings if verbose or f.status != "match"]
    if not verbose:
        matched = Counter(f.check for f in report.findings if f.status == "match")
        if matched:
            lines.append("matched: " + ", ".join(f"{n} {check}" for check, n in matched.items()))
            lines.append("")
    if shown:
        rows = [
            {
                "status": f.status.upper() if f.failed else f.status,
                "check": f.check,
                "culprit": f.culprit,
                "detail": f.message,
            }
            for f in shown
        ]
        lines += [format_table(rows, columns=["status", "check", "culprit", "detail"]), ""]
    if report.forgotten:
        lines.append("forgotten clients: " + ", ".join(report.forgotten))
    lines += [f"note: {note}" for note in report.notes]
    return "\n".join(line.rstrip() for line in lines).rstrip() + "\n"
