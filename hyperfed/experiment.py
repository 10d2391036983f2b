"""The main job: HyperLoRA vs the baselines on one corpus, one budget, one run.

``run_experiment`` builds the offline corpus, loads (or pretrains once) the base model,
then runs each method for the same rounds, sampling and local steps, evaluates every
client's validation *and* test loss before training and every ``evaluation.every`` rounds,
and writes the run directory: ``metrics.json``, a PNG of the loss
curves, and — for HyperLoRA — checkpoints, generated adapters and the ledger records. It
holds the run lock (:func:`hyperfed.rundir.lock.run_lock`) while it writes.

**Protocol (early stopping on validation, reported on test).** Each client's text is split
into train / validation / test (:func:`hyperfed.data.corpus.split_ranges`: disjoint byte
ranges, test at the very end). Every method's *selected round* is the evaluated round
(round 0, before any training, included) with the lowest mean validation loss over
clients, the earliest on a tie (:func:`select_round`); its reported result is each client's
test loss at that round. Test losses never choose anything.

Every aggregate in ``metrics.json`` (the means, the curves, the selected rounds) is kept
with the per-client values it is computed from, so :func:`metrics_without_client` can recompute it after a
forget instead of leaving a mean from which the forgotten client's losses follow.
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
from hyperfed.federation import Evaluation, evaluate_all_splits, method_label, run_rounds
from hyperfed.federation.public_pretrain import make_run_server
from hyperfed.federation.servers import AdapterServer, HyperLoRAServer, RoundOutcome
from hyperfed.plots import LOSS_CURVES, plot_curves
from hyperfed.rundir import RunDirectory
from hyperfed.rundir.lock import run_lock
from hyperfed.rundir.recorder import RunRecorder
from hypernet import evaluate_loss
from hypernet.base_models import add_lora
from hypernet.errors import ConfigError

__all__ = [
    "RunConfig",
    "ExperimentResult",
    "run_experiment",
    "run_method",
    "select_round",
    "summary_rows",
    "metrics_without_client",
    "corpus_manifest",
]

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
    # method → [(round, client → val loss)]: what each point of ``curves`` is the mean of
    curve_losses: dict[str, list[tuple[int, dict[str, float]]]] = field(default_factory=dict)
    # method → [(round, client → test loss)] at the same rounds (empty without a test split)
    test_curve_losses: dict[str, list[tuple[int, dict[str, float]]]] = field(default_factory=dict)
    base_test: dict[str, float] = field(default_factory=dict)  # client → test loss of the base model

    def mean(self, method: str) -> float:
        return _mean(self.final[method])

    def selected_round(self, method: str) -> int | None:
        """The round ``method`` is reported at: :func:`select_round` of its validation curve."""
        return select_round(self.curve_losses.get(method, []))

    def test(self, method: str) -> dict[str, float]:
        """Each client's test loss at :meth:`selected_round` (empty without a test split)."""
        chosen = self.selected_round(method)
        return next((dict(losses) for r, losses in self.test_curve_losses.get(method, []) if r == chosen), {})

    def selected_val(self, method: str) -> dict[str, float]:
        """Each client's validation loss at :meth:`selected_round`."""
        chosen = self.selected_round(method)
        return next((dict(losses) for r, losses in self.curve_losses.get(method, []) if r == chosen), {})

    def has_test(self) -> bool:
        return bool(self.base_test) and all(self.test(m) for m in self.final)

    def to_dict(self) -> dict[str, Any]:
        test = {m: self.test(m) for m in self.final}
        return {
            "final": self.final,
            "base": self.base,
            "curves": self.curves,
            "curve_losses": {m: [[r, losses] for r, losses in pts] for m, pts in self.curve_losses.items()},
            "seconds": self.seconds,
            "domain_of": self.domain_of,
            "mean": {m: self.mean(m) for m in self.final} | {"base": _mean(self.base)},
            "rejected": {m: {str(r): v for r, v in rounds.items()} for m, rounds in self.rejected.items()},
            "test_curve_losses": {m: [[r, losses] for r, losses in pts] for m, pts in self.test_curve_losses.items()},
            "base_test": self.base_test,
            "selection": SELECTION_RULE,
            "selected_round": {m: self.selected_round(m) for m in self.final},
            "test": test,
            "mean_test": {m: _mean(t) for m, t in test.items() if t}
            | ({"base": _mean(self.base_test)} if self.base_test else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], run_dir: str | Path) -> ExperimentResult:
        """The result :meth:`to_dict` wrote (``metrics.json`` of ``run_experiment``); the
        means are recomputed from the per-client values, and so are the curves where their
        per-client values are there (``curve_losses``)."""
        curve_losses = {
            m: [(int(r), dict(losses)) for r, losses in pts] for m, pts in data.get("curve_losses", {}).items()
        }
        curves = {m: [(int(r), float(v)) for r, v in pts] for m, pts in data.get("curves", {}).items()}
        curves |= {m: [(r, _mean(losses)) for r, losses in pts] for m, pts in curve_losses.items()}
        test_curves = {
            m: [(int(r), dict(losses)) for r, losses in pts] for m, pts in data.get("test_curve_losses", {}).items()
        }
        return cls(
            final={m: dict(v) for m, v in data["final"].items()},
            base=dict(data["base"]),
            curves=curves,
            seconds=dict(data.get("seconds", {})),
            domain_of=dict(data.get("domain_of", {})),
            run_dir=Path(run_dir),
            rejected={m: {int(r): dict(v) for r, v in rs.items()} for m, rs in data.get("rejected", {}).items()},
            curve_losses=curve_losses,
            test_curve_losses=test_curves,
            base_test=dict(data.get("base_test", {})),
        )


#: The early-stopping rule, stated in ``metrics.json`` next to what it chose.
SELECTION_RULE = (
    "each method is reported at the evaluated round (0 = before training included) with the lowest mean "
    "validation loss over clients, the earliest on a tie; reported losses are test losses at that round"
)


def select_round(curve: list[tuple[int, dict[str, float]]]) -> int | None:
    """The round of ``curve`` (``[(round, client → validation loss)]``) with the lowest mean
    validation loss, the earliest on a tie; ``None`` for an empty curve. Only validation
    losses go in: the test split cannot influence the choice."""
    points = [(_mean(losses), r) for r, losses in curve if losses]
    return min(points)[1] if points else None


def summary_rows(result: ExperimentResult) -> list[dict[str, Any]]:
    """One row per client plus a mean row: base and each method's *test* loss at its
    selected round, then the selected round and the mean validation loss there.

    A run without a test split (``corpus.test_kib = 0``) shows the validation loss after the
    last round instead, as before the protocol."""
    methods = list(result.final)
    if not result.has_test():
        rows = []
        for cid in result.base:
            row: dict[str, Any] = {"client": cid, "base": result.base[cid]}
            row |= {method_label(m): result.final[m][cid] for m in methods}
            rows.append(row)
        mean = {"client": "MEAN", "base": _mean(result.base)}
        rows.append(mean | {method_label(m): result.mean(m) for m in methods})
        return rows
    tests = {m: result.test(m) for m in methods}
    rows = []
    for cid in result.base_test:
        rows.append({"client": cid, "base": result.base_test[cid]} | {method_label(m): tests[m][cid] for m in methods})
    rows.append(
        {"client": "MEAN (test)", "base": _mean(result.base_test)} | {method_label(m): _mean(tests[m]) for m in methods}
    )
    rows.append(
        {"client": "MEAN (val)", "base": _mean(result.base)}
        | {method_label(m): _mean(result.selected_val(m)) for m in methods}
    )
    rows.append({"client": "selected round", "base": 0} | {method_label(m): result.selected_round(m) for m in methods})
    return rows


Curve = list[tuple[int, dict[str, float]]]


def run_method(
    method: str,
    base_model: torch.nn.Module,
    corpus: FederatedCorpus,
    config: RunConfig,
    on_round: Callable[[str, RoundOutcome], None] | None = None,
    run_dir: RunDirectory | None = None,
) -> tuple[AdapterServer, dict[str, float], Curve, dict[int, dict[str, str]], Curve]:
    """Train one method; return its server, final per-client validation losses, per-client
    validation curve (``[(round, client → loss)]``), rejections, and the per-client test
    curve at the same rounds (empty without a test split).

    With ``run_dir``, a HyperLoRA run is recorded: every registration, checkpoint and
    generated adapter goes to the run directory and the ledger (:class:`RunRecorder`).
    """
    config = config.with_method(method)
    fed = config.federation
    peft_model = add_lora(copy.deepcopy(base_model), rank=fed.lora_rank, seed=fed.seed)
    server = make_run_server(method, peft_model, fed, config.corpus)  # publicly pretrained if asked
    server.register(corpus.client_ids)
    recorder = None
    if run_dir is not None and isinstance(server, HyperLoRAServer):
        recorder = RunRecorder.open(run_dir, config.ledger.url or None, writer_msp=config.ledger.writer_msp)
        recorder.record_checkpoint(0, server.hypernet, server.trainer)  # registers every client
    rejected: dict[int, dict[str, str]] = {}
    curve: Curve = []
    test_curve: Curve = []
    every = config.evaluation.every

    def evaluate(round_: int) -> None:
        evaluations = evaluate_all_splits(server, peft_model, corpus.clients, fed, round_)
        _append(curve, test_curve, round_, evaluations)

    def after_round(outcome: RoundOutcome) -> None:
        if recorder is not None:
            recorder.record_round(outcome, server.hypernet, server.trainer)
        if outcome.rejected:
            rejected[outcome.round] = outcome.rejected
        if config.engine == "loop" and ((every and outcome.round % every == 0) or outcome.round == fed.rounds):
            evaluate(outcome.round)
        if on_round:
            on_round(method, outcome)

    try:
        if config.engine == "flower":
            _run_flower(server, config, after_round, curve, test_curve)
        else:
            evaluate(0)
            run_rounds(server, peft_model, corpus.clients, fed, callback=after_round)
    finally:
        if recorder is not None:
            recorder.close()
    return server, dict(curve[-1][1]), curve, rejected, test_curve


def _append(curve: Curve, test_curve: Curve, round_: int, evaluations: dict[str, Evaluation]) -> None:
    curve.append((round_, {cid: e.val for cid, e in evaluations.items()}))
    tests = {cid: e.test for cid, e in evaluations.items() if e.test is not None}
    if tests:
        test_curve.append((round_, tests))


def _run_flower(
    server: AdapterServer,
    config: RunConfig,
    after_round: Callable[[RoundOutcome], None],
    curve: Curve,
    test_curve: Curve,
) -> None:
    """Train through Flower (in-process grid, real ServerApp strategy and ClientApps);
    the curves come from the clients' own federated evaluation."""
    from hyperfed.flower import run_inprocess

    run = run_inprocess(config.to_run_config(), server=server, finish=None, on_round=after_round)
    losses, tests = run.history.eval_losses, run.history.test_losses
    curve.extend((r, dict(losses[r])) for r in sorted(losses))
    test_curve.extend((r, dict(tests[r])) for r in sorted(tests))


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

    Raises
    ------
    RunBusyError
        Another process writes or audits the run directory.
    """
    config = config or RunConfig()
    rd = RunDirectory(run_dir)
    rd.root.mkdir(parents=True, exist_ok=True)
    with run_lock(rd, "train"):
        return _run_experiment(rd, config, on_round, on_pretrain, overwrite)


def _run_experiment(
    rd: RunDirectory,
    config: RunConfig,
    on_round: Callable[[str, RoundOutcome], None] | None,
    on_pretrain: Callable[[int, float], None] | None,
    overwrite: bool,
) -> ExperimentResult:
    if rd.config_path.exists():
        if not overwrite:
            raise ConfigError(f"{rd.root} already holds a run; choose another directory or delete it (overwrite=True)")
        for entry in rd.root.iterdir():  # all but the lock this process holds
            if entry != rd.lock_path:
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    rd.write_json(rd.config_path, config.to_dict())
    corpus = build_corpus(config.corpus)
    rd.write_json(rd.manifest_path, corpus_manifest(corpus))
    base_model = load_or_build_base_model(config.base_model, callback=on_pretrain)

    final, curve_losses, test_curves, seconds, rejected, servers = {}, {}, {}, {}, {}, {}
    for method in config.methods:
        start = time.perf_counter()
        server, final[method], curve_losses[method], rejected[method], test_curves[method] = run_method(
            method, base_model, corpus, config, on_round, rd
        )
        seconds[method] = time.perf_counter() - start
        servers[method] = server
        log.info("%s: mean val loss %.4f in %.1f s", method, _mean(final[method]), seconds[method])
    probe = add_lora(copy.deepcopy(base_model), rank=config.federation.lora_rank)
    base_losses = {cid: evaluate_loss(probe, None, data.val) for cid, data in corpus.clients.items()}
    base_test = {
        cid: evaluate_loss(probe, None, data.test) for cid, data in corpus.clients.items() if data.test is not None
    }
    if corpus.tokens_per_byte:  # a real model's token losses, reported in nats/byte like the byte model's
        final = {m: _per_byte(corpus, losses) for m, losses in final.items()}
        base_losses = _per_byte(corpus, base_losses)
        curve_losses = {m: [(r, _per_byte(corpus, ls)) for r, ls in pts] for m, pts in curve_losses.items()}
        base_test = _per_byte(corpus, base_test, "test")
        test_curves = {m: [(r, _per_byte(corpus, ls, "test")) for r, ls in pts] for m, pts in test_curves.items()}
    curves = {m: [(r, _mean(losses)) for r, losses in pts] for m, pts in curve_losses.items()}
    result = ExperimentResult(
        final,
        base_losses,
        curves,
        seconds,
        corpus.domain_of,
        rd.root,
        rejected,
        servers,
        curve_losses,
        {m: pts for m, pts in test_curves.items() if pts},
        base_test,
    )
    for method in config.methods:
        log.info(
            "%s: selected round %s, mean test loss %.4f",
            method,
            result.selected_round(method),
            _mean(result.test(method)),
        )
    rd.write_json(rd.metrics_path, result.to_dict())
    plot_curves(result, rd.plots_dir / LOSS_CURVES)  # hyperfed.plots
    return result


def corpus_manifest(corpus: FederatedCorpus) -> dict[str, dict[str, int]]:
    """``corpus_manifest.json``: per client, how many train, validation and test tokens it has.

    No content hash: an unsalted sha256 of a client's text would answer "is this their
    text?" for anyone holding the run (a guessing oracle), for the forgotten and the
    remaining clients alike; a run's data is re-derived from ``run.json`` by the replay
    anyway, and a deployment's server never holds the clients' text to hash.
    """
    return {
        cid: {"train_tokens": int(data.train.numel()), "val_tokens": int(data.val.numel())}
        | ({} if data.test is None else {"test_tokens": int(data.test.numel())})
        for cid, data in corpus.clients.items()
    }


def _without(value: Any, client_id: str) -> Any:
    """``value`` with every dict key and list item equal to ``client_id`` removed, at any depth."""
    if isinstance(value, dict):
        return {k: _without(v, client_id) for k, v in value.items() if k != client_id}
    if isinstance(value, list):
        return [_without(v, client_id) for v in value if v != client_id]
    return value


def metrics_without_client(metrics: dict[str, Any], client_id: str) -> dict[str, Any]:
    """``metrics.json`` as if ``client_id`` had never been evaluated.

    Every per-client entry of the client goes, and every aggregate is recomputed over the
    remaining clients: a mean kept from before would give the client's loss away
    (n × mean − Σ others). For the file of :func:`run_experiment` that is ``mean`` and
    ``curves`` (from ``curve_losses``; a curve written without its per-client values
    cannot be recomputed and is dropped), and the early-stopping choice: ``selected_round``,
    ``test`` and ``mean_test`` are recomputed from the remaining clients' curves (the
    forgotten client's validation loss no longer chooses the round). A Flower run's per-round ``train_loss`` is a mean
    over the accepted clients whose parts are not kept: where the client was accepted it
    becomes ``None``.
    """
    rounds = metrics.get("rounds")
    if isinstance(rounds, list):  # a Flower run (hyperfed.flower.history)
        rounds = [
            {**row, "train_loss": None} if isinstance(row, dict) and client_id in row.get("accepted", []) else row
            for row in rounds
        ]
        metrics = {**metrics, "rounds": rounds}
    scrubbed = _without(copy.deepcopy(metrics), client_id)
    if not isinstance(scrubbed.get("final"), dict) or not isinstance(scrubbed.get("base"), dict):
        return scrubbed
    result = ExperimentResult.from_dict(scrubbed, ".")
    for method in list(result.curves):
        if method not in result.curve_losses:
            log.warning("dropping the %s loss curve: it was saved without per-client values to recompute", method)
            result.curves[method] = []
    recomputed = result.to_dict()
    if not result.base:  # nobody left to average over
        recomputed["mean"] = {}
        recomputed["mean_test"] = {}
    return {**scrubbed, **recomputed}


def _per_byte(corpus: FederatedCorpus, losses: dict[str, float], split: str = "val") -> dict[str, float]:
    return {cid: corpus.nats_per_byte(cid, loss, split) for cid, loss in losses.items()}


def _mean(losses: dict[str, float]) -> float:
    return sum(losses.values()) / len(losses) if losses else float("nan")
