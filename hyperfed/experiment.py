"""The main job: HyperLoRA vs FedAvg-LoRA vs local-only on one corpus, one budget, one run.

``run_experiment`` builds the offline corpus, loads (or pretrains once) the base model,
then runs each method for the same rounds, sampling and local steps, evaluates every
client's held-out loss, and writes the run directory: ``metrics.json``, a PNG of the loss
curves, and — for HyperLoRA — checkpoints, generated adapters and the ledger records.
"""

from __future__ import annotations

import copy
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hyperfed.base_model import load_or_build_base_model
from hyperfed.config import RunConfig
from hyperfed.data.corpus import FederatedCorpus, build_corpus
from hyperfed.federation import evaluate_all, make_server, method_label, run_rounds
from hyperfed.federation.servers import AdapterServer, HyperLoRAServer, RoundOutcome
from hyperfed.rundir import RunDirectory
from hyperfed.rundir.recorder import RunRecorder
from hypernet import evaluate_loss
from hypernet.base_models import add_lora
from hypernet.errors import ConfigError

__all__ = ["RunConfig", "ExperimentResult", "run_experiment", "summary_rows"]

log = logging.getLogger(__name__)


@dataclass
class ExperimentResult:
    """Per-client final losses per method, loss curves, timings; see :func:`summary_rows`."""

    final: dict[str, dict[str, float]]  # method → client → val loss
    base: dict[str, float]  # client → val loss of the base model (no adapter)
    curves: dict[str, list[tuple[int, float]]]  # method → [(round, mean val loss)]
    seconds: dict[str, float]
    domain_of: dict[str, str]
    run_dir: Path
    rejected: dict[str, dict[int, dict[str, str]]] = field(default_factory=dict)
    servers: dict[str, AdapterServer] = field(default_factory=dict, repr=False)

    def mean(self, method: str) -> float:
        values = self.final[method].values()
        return sum(values) / len(values)

    def to_dict(self) -> dict[str, Any]:
        return {
            "final": self.final,
            "base": self.base,
            "curves": self.curves,
            "seconds": self.seconds,
            "domain_of": self.domain_of,
            "mean": {m: self.mean(m) for m in self.final} | {"base": sum(self.base.values()) / len(self.base)},
            "rejected": {m: {str(r): v for r, v in rounds.items()} for m, rounds in self.rejected.items()},
        }


def summary_rows(result: ExperimentResult) -> list[dict[str, Any]]:
    """One row per client plus a mean row: base and each method's validation loss."""
    methods = list(result.final)
    rows = []
    for cid in result.base:
        row: dict[str, Any] = {"client": cid, "base": result.base[cid]}
        row |= {method_label(m): result.final[m][cid] for m in methods}
        rows.append(row)
    mean = {"client": "MEAN", "base": sum(result.base.values()) / len(result.base)}
    mean |= {method_label(m): result.mean(m) for m in methods}
    rows.append(mean)
    return rows


def run_method(
    method: str,
    base_model: torch.nn.Module,
    corpus: FederatedCorpus,
    config: RunConfig,
    on_round: Callable[[str, RoundOutcome], None] | None = None,
    run_dir: RunDirectory | None = None,
) -> tuple[AdapterServer, dict[str, float], list[tuple[int, float]], dict[int, dict[str, str]]]:
    """Train one method; return its server, final per-client losses, loss curve, rejections.

    With ``run_dir``, a HyperLoRA run is recorded: every registration, checkpoint and
    generated adapter goes to the run directory and the ledger (:class:`RunRecorder`).
    """
    config = config.with_method(method)
    fed = config.federation
    peft_model = add_lora(copy.deepcopy(base_model), rank=fed.lora_rank, seed=fed.seed)
    server = make_server(method, peft_model, fed)
    server.register(corpus.client_ids)
    recorder = None
    if run_dir is not None and isinstance(server, HyperLoRAServer):
        recorder = RunRecorder.open(run_dir, config.ledger.url or None, writer_msp=config.ledger.writer_msp)
        recorder.record_checkpoint(0, server.hypernet, server.trainer)  # registers every client
    rejected: dict[int, dict[str, str]] = {}
    curve: list[tuple[int, float]] = []
    every = config.evaluation.every

    def after_round(outcome: RoundOutcome) -> None:
        if recorder is not None:
            recorder.record_round(outcome, server.hypernet, server.trainer)
        if outcome.rejected:
            rejected[outcome.round] = outcome.rejected
        if config.engine == "loop" and ((every and outcome.round % every == 0) or outcome.round == fed.rounds):
            curve.append((outcome.round, _mean(evaluate_all(server, peft_model, corpus.clients))))
        if on_round:
            on_round(method, outcome)

    try:
        if config.engine == "flower":
            final = _run_flower(server, config, after_round, curve)
        else:
            curve.append((0, _mean(evaluate_all(server, peft_model, corpus.clients))))
            run_rounds(server, peft_model, corpus.clients, fed, callback=after_round)
            final = evaluate_all(server, peft_model, corpus.clients)
    finally:
        if recorder is not None:
            recorder.close()
    return server, final, curve, rejected


def _run_flower(
    server: AdapterServer,
    config: RunConfig,
    after_round: Callable[[RoundOutcome], None],
    curve: list[tuple[int, float]],
) -> dict[str, float]:
    """Train through Flower (in-process grid, real ServerApp strategy and ClientApps);
    curves and final losses come from the clients' own federated evaluation."""
    from hyperfed.flower import run_inprocess

    run = run_inprocess(config.to_run_config(), server=server, finish=None, on_round=after_round)
    losses = run.history.eval_losses
    curve.extend((r, _mean(losses[r])) for r in sorted(losses))
    return dict(losses[max(losses)])


def run_experiment(
    run_dir: str | Path,
    config: RunConfig | None = None,
    on_round: Callable[[str, RoundOutcome], None] | None = None,
    on_pretrain: Callable[[int, float], None] | None = None,
    overwrite: bool = False,
) -> ExperimentResult:
    """Run every method in ``config.methods`` and write the run directory.

    A directory that already holds a run is refused (its ledger and forget log would mix
    with the new run's) unless ``overwrite``, which deletes it first.
    """
    config = config or RunConfig()
    rd = RunDirectory(run_dir)
    if rd.config_path.exists():
        if not overwrite:
            raise ConfigError(f"{rd.root} already holds a run; choose another directory or delete it (overwrite=True)")
        shutil.rmtree(rd.root)
    rd.root.mkdir(parents=True, exist_ok=True)
    rd.write_json(rd.config_path, config.to_dict())
    corpus = build_corpus(config.corpus)
    rd.write_json(rd.manifest_path, corpus.manifest)
    base_model = load_or_build_base_model(config.base_model, callback=on_pretrain)

    final, curves, seconds, rejected, servers = {}, {}, {}, {}, {}
    for method in config.methods:
        start = time.perf_counter()
        server, final[method], curves[method], rejected[method] = run_method(
            method, base_model, corpus, config, on_round, rd
        )
        seconds[method] = time.perf_counter() - start
        servers[method] = server
        log.info("%s: mean val loss %.4f in %.1f s", method, _mean(final[method]), seconds[method])
    probe = add_lora(copy.deepcopy(base_model), rank=config.federation.lora_rank)
    base_losses = {cid: evaluate_loss(probe, None, data.val) for cid, data in corpus.clients.items()}
    result = ExperimentResult(final, base_losses, curves, seconds, corpus.domain_of, rd.root, rejected, servers)
    rd.write_json(rd.metrics_path, result.to_dict())
    plot_curves(result, rd.plots_dir / "loss_curves.png")
    return result


def plot_curves(result: ExperimentResult, path: Path) -> Path:
    """Mean validation loss per round for each method, with the base model as a line; and
    each client's final loss per method."""
    from matplotlib.figure import Figure  # no pyplot: leaves the caller's backend alone

    fig = Figure(figsize=(12, 4.5))
    left, right = fig.subplots(1, 2)
    for method, curve in result.curves.items():
        rounds, losses = zip(*curve, strict=True)
        left.plot(rounds, losses, marker="o", label=method_label(method))
    left.axhline(sum(result.base.values()) / len(result.base), color="grey", ls="--", label="base model")
    left.set(xlabel="round", ylabel="mean validation loss (nats/byte)", title="Learning curves (same budget)")
    left.legend()
    clients = list(result.base)
    width = 0.8 / (len(result.final) + 1)
    xs = range(len(clients))
    right.bar(
        [x - 0.4 + width / 2 for x in xs], [result.base[c] for c in clients], width, label="base", color="lightgrey"
    )
    for i, (method, losses) in enumerate(result.final.items(), start=1):
        right.bar(
            [x - 0.4 + width / 2 + i * width for x in xs],
            [losses[c] for c in clients],
            width,
            label=method_label(method),
        )
    right.set_xticks(list(xs), clients, rotation=45, ha="right", fontsize=7)
    right.set(ylabel="validation loss (nats/byte)", title="Per client, after training")
    lo = min(min(v.values()) for v in result.final.values())
    right.set_ylim(bottom=lo - 0.2)
    right.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def _mean(losses: dict[str, float]) -> float:
    return sum(losses.values()) / len(losses)
