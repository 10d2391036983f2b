"""Helpers of the recorder and audit tests: a tiny recorded federated run, a ledger that
can be switched off, and the purge that issue 5's ``forget_client`` must match.

(Imported by ``test_recorder.py`` and ``test_audit.py``; not a test module itself.)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from hyperfed.errors import LedgerUnavailableError
from hyperfed.federation import FederationConfig, HyperLoRAServer, make_server, run_rounds
from hyperfed.ledger import EmbeddedLedger, Ledger
from hyperfed.rundir import OPTIMIZER_FILE, RunDirectory
from hyperfed.rundir.recorder import RunRecorder
from hypernet import ClientData, LocalTrainConfig, load_hypernet, save_hypernet
from hypernet.base_models import add_lora, tiny_llama
from hypernet.io import read_meta

CLIENTS = ("alice", "bob", "org/carol")  # one id with a "/" on purpose
ROUNDS = 2


class SwitchableLedger(EmbeddedLedger):
    """A real embedded ledger behind a network switch.

    ``mode``: ``"up"``; ``"down"`` (nothing gets through); ``"lose-reply"`` (a submit
    commits, then its reply is lost, so the caller cannot tell it arrived).
    """

    mode = "up"

    def submit(self, function, *args):
        if self.mode == "down":
            raise LedgerUnavailableError("connection refused")
        payload = super().submit(function, *args)
        if self.mode == "lose-reply":
            raise LedgerUnavailableError("deadline exceeded after submit")
        return payload

    def evaluate(self, function, *args):
        if self.mode == "down":
            raise LedgerUnavailableError("connection refused")
        return super().evaluate(function, *args)


@dataclass
class RecordedRun:
    run_dir: RunDirectory
    server: HyperLoRAServer
    model: torch.nn.Module
    clients: dict[str, ClientData]
    config: FederationConfig
    recorder: RunRecorder


def tiny_clients(seed: int = 0) -> dict[str, ClientData]:
    g = torch.Generator().manual_seed(seed)
    return {
        cid: ClientData(torch.randint(0, 256, (6, 16), generator=g), torch.randint(0, 256, (2, 16), generator=g))
        for cid in CLIENTS
    }


def start_run(root: Path, ledger: Ledger | None = None) -> RecordedRun:
    """A HyperLoRA server for 3 clients and its recorder, registered, round 0 recorded."""
    model = add_lora(tiny_llama(hidden_size=32, num_layers=1), rank=2)
    config = FederationConfig(rounds=ROUNDS, local=LocalTrainConfig(steps=1, batch_size=2), lora_rank=2)
    server = make_server("hyperlora", model, config)
    clients = tiny_clients()
    server.register(list(clients))
    run_dir = RunDirectory(root)
    recorder = RunRecorder.open(run_dir) if ledger is None else RunRecorder(run_dir, ledger)
    recorder.register_clients(list(clients), server.hypernet)
    recorder.record_checkpoint(0, server.hypernet, server.trainer)
    return RecordedRun(run_dir, server, model, clients, config, recorder)


def train(run: RecordedRun, first: int = 1, last: int = ROUNDS) -> None:
    """Rounds ``first..last`` through the plain loop, recorded by the round callback."""
    run_rounds(
        run.server,
        run.model,
        run.clients,
        run.config,
        first_round=first,
        last_round=last,
        callback=run.recorder.round_callback(run.server),
    )


def record_run(root: Path) -> RecordedRun:
    """A complete, closed 2-round run on the embedded ledger."""
    run = start_run(root)
    train(run)
    run.recorder.close()
    return run


# ------------------------------------------------------------------------ forgetting


def purge_checkpoint(folder: Path, client_id: str) -> None:
    """Rewrite one checkpoint without the client's embedding and optimizer state."""
    extra = read_meta(folder).get("extra", {})
    optimizer = folder / OPTIMIZER_FILE
    state = load_file(optimizer) if optimizer.exists() else None
    hypernet = load_hypernet(folder)
    if client_id in hypernet.clients:
        hypernet.remove_client(client_id)
    save_hypernet(hypernet, folder, extra=extra)  # replaces the whole folder atomically
    if state is not None:
        kept = {k: v for k, v in state.items() if not k.startswith(f"client/{client_id}/")}
        save_file(kept, optimizer)


def forget_by_purge(run: RecordedRun, client_id: str, round_: int, *, skip: str = "") -> None:
    """What issue 5's ``forget_client(mode="delete")`` must leave behind, done by hand.

    Purges the client from every checkpoint, deletes its adapter files, destroys its salt,
    removes it from the live hypernetwork and records the forget. ``skip`` leaves one step
    out (``"checkpoint"``, ``"optimizer"``, ``"salt"``, ``"adapter"``) to show the audit
    catching an incomplete erasure.
    """
    rd = run.run_dir
    for r in rd.checkpoint_rounds():
        folder = rd.checkpoint_dir(r)
        if skip == "checkpoint" and r == 1:
            continue
        before = load_file(folder / OPTIMIZER_FILE) if skip == "optimizer" else None
        purge_checkpoint(folder, client_id)
        if before is not None:
            save_file(before, folder / OPTIMIZER_FILE)  # put the old optimizer state back
    for r in rd.adapter_rounds():
        if not (skip == "adapter" and r == 1):
            rd.adapter_path(r, client_id).unlink(missing_ok=True)
    if skip != "salt":
        run.recorder.salts.destroy(client_id)
    run.server.trainer.remove_client(client_id)  # embedding + its optimizer state
    hypernet = run.server.hypernet
    regenerated_at = rd.regenerated(client_id)
    with torch.no_grad():  # saved where forget_client saves them: the audit checks their root
        regenerated = {c: regenerated_at.save_adapter(0, c, hypernet.generate(c)) for c in hypernet.client_ids}
    guarantee = {"policy": "shared", "guarantee": "none", "epsilon": None, "delta": None, "text": "no guarantee"}
    run.recorder.record_forget(client_id, round_, hypernet, regenerated, mode="delete", guarantee=guarantee)
