"""What one forget guarantees, as recorded on the ledger with it.

:func:`stated_guarantee` is a function of the run's config and the forget's journal only, so a
retried ledger step resends the same record (the contract treats it as a replay). The
client's participation count is taken when the journal is written, before any of its
adapters is purged (:func:`participations`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hyperfed.unlearning.modes import forget_mode

if TYPE_CHECKING:
    from hyperfed.rundir import RunDirectory

__all__ = ["participations", "stated_guarantee"]


def participations(rd: RunDirectory, client_id: str) -> int:
    """The rounds the client took part in: rounds with an adapter generated for it, plus
    (to stay an upper bound) rounds whose adapters an earlier exact forget removed."""
    from hyperfed.unlearning.forget import forgotten_clients

    rounds = rd.adapter_rounds()
    taken = sum(rd.adapter_path(r, client_id).exists() for r in rounds)
    gaps = set(range(1, max(rd.checkpoint_rounds(), default=0) + 1)) - set(rounds)
    return taken + (len(gaps) if forgotten_clients(rd) else 0)


def stated_guarantee(rd: RunDirectory, journal: dict[str, Any]) -> dict[str, Any]:
    """:func:`hyperfed.federation.privacy.forget_guarantee` of the forget ``journal`` describes."""
    from hyperfed.config import RunConfig
    from hyperfed.federation.privacy import forget_guarantee

    fed = RunConfig.from_dict(rd.read_json(rd.config_path, default={})).federation
    count = journal.get("participations")
    known = isinstance(count, int) and not isinstance(count, bool) and count >= 0
    return forget_guarantee(fed, journal["round"], forget_mode(journal["mode"]).replays, count if known else None)
