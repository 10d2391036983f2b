"""Exact unlearning by replay: roll back before a client's first round, replay without it.

:func:`replay_without` replays a ``loop``-engine run in the loop, rebuilding its data and
base model from ``run.json`` (the simulation knows every client's data). Runs made by the
Flower engine or a deployment replay as a Flower run whose server holds no data
(:mod:`hyperfed.flower.replay`); :func:`exact_model_step` picks the way.

After the replay nothing that learned from the client is kept: the checkpoints of rounds
``first_round .. latest - 1`` (their shared weights had its updates) and every adapter
generated in rounds ``first_round + 1 .. latest`` (by those weights) are removed
(:func:`drop_superseded`); the ledger keeps their records, and the audit reports them as
removed by the exact forget. A later exact forget then rolls back to the latest checkpoint
still there before its client's first round (:func:`replay_start`).
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
from typing import Any

from torch import nn

from hyperfed.config import RunConfig
from hyperfed.data.corpus import FederatedCorpus
from hyperfed.errors import ForgetInterruptedError
from hyperfed.federation import FederationConfig, HyperLoRAServer, make_server, run_rounds
from hyperfed.rundir import RunDirectory, load_optimizer_file
from hyperfed.rundir.fingerprints import POLICY_KEY
from hypernet.base_models import add_lora
from hypernet.errors import ConfigError, CorruptFileError
from hypernet.io import read_meta

__all__ = [
    "replay_without",
    "resumed_server",
    "load_experiment",
    "exact_model_step",
    "replay_start",
    "drop_superseded",
]

log = logging.getLogger(__name__)


def load_experiment(rd: RunDirectory) -> tuple[RunConfig, FederatedCorpus, nn.Module]:
    """The run's config, corpus and base model, rebuilt from ``run.json`` (written the same
    way by ``run_experiment`` and by the Flower ServerApp)."""
    from hyperfed.base_model import load_or_build_base_model
    from hyperfed.data.corpus import build_corpus

    config = RunConfig.from_dict(rd.read_json(rd.config_path))
    return config, build_corpus(config.corpus), load_or_build_base_model(config.base_model)


def resumed_server(
    rd: RunDirectory, client_id: str, first_round: int, peft_model: nn.Module, fed: FederationConfig
) -> HyperLoRAServer:
    """The run's HyperLoRA server as it was after round ``first_round - 1`` (weights and
    optimizer state of that checkpoint), without ``client_id``: where a replay starts."""
    hypernet = rd.load_checkpoint(first_round - 1)
    if client_id in hypernet.clients:
        hypernet.remove_client(client_id)
    server = make_server("hyperlora", peft_model, fed, hypernet=hypernet)
    server.trainer.load_state_dict(load_optimizer_file(rd.checkpoint_dir(first_round - 1)))
    return server


def replay_without(
    rd: RunDirectory, client_id: str, first_round: int, last_round: int
) -> tuple[HyperLoRAServer, list[int]]:
    """Rounds ``first_round..last_round`` replayed from checkpoint ``first_round - 1``
    without ``client_id``; returns the server after the replay and the replayed rounds."""
    if first_round < 1 or first_round > last_round + 1:
        raise ConfigError(f"cannot replay rounds {first_round}..{last_round}")
    config, corpus, base = load_experiment(rd)
    fed = config.with_method("hyperlora").federation
    peft_model = add_lora(copy.deepcopy(base), rank=fed.lora_rank, seed=fed.seed)
    server = resumed_server(rd, client_id, first_round, peft_model, fed)
    clients = {cid: data for cid, data in corpus.clients.items() if cid in server.hypernet.clients}
    rounds = list(range(first_round, last_round + 1))
    log.info("replaying rounds %d..%d without %r", first_round, last_round, client_id)
    run_rounds(server, peft_model, clients, fed, first_round=first_round, last_round=last_round)
    return server, rounds


def exact_model_step(rd: RunDirectory, journal: dict[str, Any]) -> None:
    """``exact`` (:data:`~hyperfed.unlearning.modes.FORGET_MODES`): the latest checkpoint
    replayed from the one before the client's first round, without the client.

    Under ``frozen`` nothing shared ever learned from the client, so there is nothing to
    replay: the step is delete's. Otherwise the replay runs where the run ran: ``flwr run``
    on the deployment at ``journal["superlink"]`` if the forget names one, on an in-process
    Flower grid for a run made by the Flower engine, in the loop for a ``loop`` run
    (:mod:`hyperfed.flower.replay`).
    """
    client_id, round_, first = journal["client_id"], journal["round"], journal["first_round"]
    config = RunConfig.from_dict(rd.read_json(rd.config_path))
    if config.federation.shared_policy == "frozen":
        from hyperfed.unlearning.forget import delete_model_step

        journal["replayed_rounds"] = []
        delete_model_step(rd, journal)
        return
    kept = read_meta(rd.checkpoint_dir(round_)).get("extra", {})  # the run's recorded policy stays
    policy = {POLICY_KEY: kept[POLICY_KEY]} if isinstance(kept, dict) and POLICY_KEY in kept else {}
    extra = {"exact_forget": True, **policy}
    start = replay_start(rd, first)
    journal["replayed_rounds"] = list(range(start, round_ + 1))
    if journal.get("superlink") or config.engine == "flower":
        _flower_replay(rd, journal, config, extra, start)
    else:
        server, _ = replay_without(rd, client_id, start, round_)
        # weights and optimizer state in one swap; the checkpoint does not name the client
        rd.save_checkpoint(round_, server.hypernet, server.trainer, extra=extra)
    drop_superseded(rd, first, round_)


def replay_start(rd: RunDirectory, first_round: int) -> int:
    """The first round a replay for a client first sampled in ``first_round`` re-runs: the
    one after the latest checkpoint before ``first_round`` (normally ``first_round``; earlier
    where an exact forget removed checkpoints in between — the rounds between had no update
    from the client, so replaying them changes nothing but the cost).

    Raises
    ------
    CorruptFileError
        No checkpoint before ``first_round`` is left (the round-0 one was removed).
    """
    before = [r for r in rd.checkpoint_rounds() if r < first_round]
    if not before:
        raise CorruptFileError(
            f"{rd.root / 'checkpoints'} has no checkpoint before round {first_round} to replay from "
            "(the round-0 checkpoint is gone): restore it from a backup"
        )
    return max(before) + 1


def drop_superseded(rd: RunDirectory, first_round: int, last_round: int) -> None:
    """Remove what learned from a client first sampled in ``first_round`` and is not the new
    round-``last_round`` state: checkpoints ``first_round .. last_round - 1`` and the adapters
    generated in rounds ``first_round + 1 .. last_round``. Idempotent (a crash re-runs it):
    each folder is renamed out of the layout first, then deleted."""
    doomed = [rd.checkpoint_dir(r) for r in range(first_round, last_round)]
    doomed += [rd.root / "adapters" / f"round-{r:04d}" for r in range(first_round + 1, last_round + 1)]
    for folder in doomed:
        trash = folder.with_name(f".{folder.name}.old")  # a stray the audit names if a crash leaves it
        if folder.is_dir():
            shutil.rmtree(trash, ignore_errors=True)
            os.replace(folder, trash)
        shutil.rmtree(trash, ignore_errors=True)
    if doomed:
        log.info(
            "removed checkpoints %d..%d and adapters of rounds %d..%d: they learned from the forgotten client",
            first_round,
            last_round - 1,
            first_round + 1,
            last_round,
        )


def _flower_replay(
    rd: RunDirectory, journal: dict[str, Any], config: RunConfig, extra: dict[str, Any], start: int
) -> None:
    """The replay from round ``start`` as a Flower run (:mod:`hyperfed.flower.replay`); a
    SuperLink that is down or a client that does not connect leaves the forget pending, to
    ``--resume``."""
    from hyperfed.flower.errors import ClientIdentityError, FlowerRunError
    from hyperfed.flower.replay import remove_replay_files, replay_in_process, replay_on_superlink

    client_id, round_ = journal["client_id"], journal["round"]
    try:
        if journal.get("superlink"):
            hypernet, state = replay_on_superlink(
                rd, client_id, start, journal["superlink"], timeout=config.round_timeout
            )
            rd.save_checkpoint(round_, hypernet, extra=extra, optimizer_state=state)
            remove_replay_files(rd, [client_id])
        else:
            server = replay_in_process(rd, client_id, start)
            rd.save_checkpoint(round_, server.hypernet, server.trainer, extra=extra)
    except (FlowerRunError, ClientIdentityError) as exc:
        raise ForgetInterruptedError(
            f"the exact forget of {client_id!r} is committed but its replay failed: {exc}. Fix the cause (is the "
            f"SuperLink up, is every remaining client connected?), then run `hyperfed forget {rd.root} --resume`"
        ) from exc
