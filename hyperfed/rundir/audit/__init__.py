"""``audit_run``: recompute every hash of a run directory and check it against the ledger.

* :mod:`~hyperfed.rundir.audit.checks` — the checks and :func:`audit_run`;
* :mod:`~hyperfed.rundir.audit.forgets` — the forget events' regenerated adapters;
* :mod:`~hyperfed.rundir.audit.report` — :class:`AuditReport`, its findings, JSON and table.
"""

from hyperfed.rundir.audit.checks import audit_run
from hyperfed.rundir.audit.report import AuditReport, Finding, render

__all__ = ["audit_run", "AuditReport", "Finding", "render"]
