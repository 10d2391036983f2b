"""``forget_and_verify``: forget a client and measure, against retraining, that it worked.

Rows of the report (always next to the base model's row):

=================  ==========================================================
base model         no adapter at all: chance level for every measure
before forget      the client's own generated adapter (what it memorised)
after <mode>       the remaining system's adapter for a *newcomer* (mean of the
                   remaining embeddings): what anyone can still get out of it
retrain (gold)     the same, for a hypernetwork trained without the client
attack on <mode>   an embedding fitted on the client's *other* text against the
                   frozen post-forget hypernetwork (can the secrets be recovered?)
attack on retrain  the same attack against the gold standard
strong attack on   an embedding *and* a free residual fitted on the client's other
<mode> / retrain   text and the canary prefixes (the attacker knows the format)
=================  ==========================================================

"Excess exposure removed" (DESIGN §5) is ``(before − after) / (before − gold)``: 1 when the
forget leaves no more exposure than retraining without the client, 0 when it removes nothing.
For an attack row the gold is the same attack against the retrained model. It is ``None``
("n/a") when ``before − gold`` is below :data:`EXCESS_EPSILON_BITS` (nothing to remove).
The report also states the run's shared-weight policy and the guarantee it gives.

Columns: canary exposure (bits; Carlini et al.), loss-threshold membership AUC on the
client's train vs held-out blocks (tie-safe, 0.5 = chance; each block's loss is calibrated
by the base model's loss on it, so the base row is exactly 0.5; none for an attack row: the
attack is fitted on those held-out blocks, which would then look like members), the client's
held-out loss (for an attack row: on the text it was fitted on), the retained clients' mean
held-out loss, and wall time (forget vs retrain).
"""

from __future__ import annotations

import copy
import logging
import math
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from hyperfed.data.corpus import CorpusConfig, FederatedCorpus, corpus_canaries
from hyperfed.federation import run_rounds
from hyperfed.federation.public_pretrain import make_run_server
from hyperfed.rundir import RunDirectory
from hyperfed.unlearning.attack import adapter_from_embedding, embedding_recovery_attack
from hyperfed.unlearning.canaries import mean_exposure
from hyperfed.unlearning.forget import forget_client
from hyperfed.unlearning.frontier import draw_frontier, frontier_points
from hyperfed.unlearning.membership import block_losses, membership_auc
from hyperfed.unlearning.replay import load_experiment
from hyperfed.unlearning.strong_attack import residual_recovery_attack
from hypernet import HyperLoRA, evaluate_loss
from hypernet.base_models import add_lora

__all__ = [
    "VerificationRow",
    "VerificationReport",
    "forget_and_verify",
    "render_report",
    "plot_report",
    "excess_removed",
    "excess_removed_by_row",
    "shared_guarantee",
    "EXCESS_EPSILON_BITS",
]

log = logging.getLogger(__name__)

EXCESS_EPSILON_BITS = 0.05
"""Below this ``before − gold`` gap (bits) there is no excess to remove: the fraction is n/a."""


@dataclass
class VerificationRow:
    name: str
    exposure_bits: float | None
    mia_auc: float | None  # None for an attack row (fitted on the held-out blocks)
    forgotten_loss: float
    retained_loss: float | None
    seconds: float | None = None


@dataclass
class VerificationReport:
    client_id: str
    mode: str
    rows: list[VerificationRow]
    exposure_ceiling_bits: float | None
    canaries: int
    speedup_vs_retrain: dict[str, float] = field(default_factory=dict)
    excess_removed: dict[str, float | None] = field(default_factory=dict)
    excess_epsilon_bits: float = EXCESS_EPSILON_BITS
    guarantee: dict = field(default_factory=dict)

    def row(self, name: str) -> VerificationRow:
        return next(r for r in self.rows if r.name == name)

    def to_dict(self) -> dict:
        return asdict(self)


class _Measure:
    """Shared measuring context: one model, the client's data, one candidate seed."""

    def __init__(
        self,
        peft_model: torch.nn.Module,
        corpus: FederatedCorpus,
        corpus_config: CorpusConfig,
        client_id: str,
        num_candidates: int,
    ) -> None:
        self.model = peft_model
        self.corpus = corpus
        self.client_id = client_id
        self.data = corpus.clients[client_id]
        self.others = {c: d for c, d in corpus.clients.items() if c != client_id}
        self.canaries = corpus_canaries(corpus_config) if corpus_config.canary_client == client_id else []
        self.num_candidates = num_candidates
        self.base_train = block_losses(peft_model, None, self.data.train)
        self.base_val = block_losses(peft_model, None, self.data.val)

    def row(
        self,
        name: str,
        adapter: Mapping[str, torch.Tensor] | None,
        hypernet: HyperLoRA | None,
        seconds: float | None = None,
        retained_base: bool = False,
        membership: bool = True,
    ) -> VerificationRow:
        exposure = (
            mean_exposure(self.model, adapter, self.canaries, self.num_candidates, seed=0) if self.canaries else None
        )
        # Reference-calibrated scores (loss minus the base model's loss on the same block):
        # a client's train and held-out text come from different parts of its source, and
        # raw losses would mistake that shift for membership. 0.5 = chance.
        auc = None
        if membership:
            members = block_losses(self.model, adapter, self.data.train) - self.base_train
            nonmembers = block_losses(self.model, adapter, self.data.val) - self.base_val
            auc = membership_auc(members, nonmembers)
        retained = None
        if hypernet is not None:
            with torch.no_grad():
                adapters = hypernet.generate_many([c for c in self.others if c in hypernet.clients])
            losses = [self._per_byte(c, a, self.others[c].val) for c, a in adapters.items()]
            retained = sum(losses) / len(losses)
        elif retained_base:
            retained = sum(self._per_byte(c, None, d.val) for c, d in self.others.items()) / len(self.others)
        forgotten = self._per_byte(self.client_id, adapter, self.data.val)
        log.info("%s: exposure %s, AUC %s, loss %.4f", name, exposure, auc, forgotten)
        return VerificationRow(name, exposure, auc, forgotten, retained, seconds)

    def _per_byte(self, client_id: str, adapter: Mapping[str, torch.Tensor] | None, blocks: torch.Tensor) -> float:
        """Validation loss in nats/byte (the token loss × the client's tokens per byte)."""
        return self.corpus.nats_per_byte(client_id, evaluate_loss(self.model, adapter, blocks))


def newcomer_adapter(hypernet: HyperLoRA) -> dict[str, torch.Tensor]:
    """The adapter for an unseen client: the mean of the remaining embeddings."""
    mean = torch.stack([hypernet.clients.parameter(c).detach() for c in hypernet.client_ids]).mean(0)
    return adapter_from_embedding(hypernet, mean)


def forget_and_verify(
    run_dir: str | Path,
    client_id: str,
    mode: str = "delete",
    compare_modes: tuple[str, ...] = (),
    num_candidates: int = 1000,
    attack_steps: int = 100,
) -> VerificationReport:
    """Forget ``client_id`` from the run with ``mode`` and measure it against retraining.

    ``compare_modes`` are also run (on a scratch copy of the run made before the forget)
    so one report compares e.g. delete and exact. Writes ``forgets/<client>/report.json``
    and ``report.png`` (its last panel: the utility ↔ unlearning frontier) into the run directory.
    """
    rd = RunDirectory(run_dir)
    config, corpus, base = load_experiment(rd)
    fed = replace(config.federation, method="hyperlora")
    model = add_lora(copy.deepcopy(base), rank=fed.lora_rank, seed=fed.seed)
    if client_id not in corpus.clients:
        forget_client(rd, client_id, mode)  # raises the right typed error (unknown / forgotten)
    measure = _Measure(model, corpus, config.corpus, client_id, num_candidates)
    latest = max(rd.checkpoint_rounds())
    before = rd.load_checkpoint(latest)
    if client_id not in before.clients:
        forget_client(rd, client_id, mode)  # raises the right typed error (unknown / forgotten)
    with torch.no_grad():
        own = {k: v.detach().clone() for k, v in before.generate(client_id).items()}
    rows = [measure.row("base model", None, None, retained_base=True), measure.row("before forget", own, before)]

    # the gold standard: the same run, trained without the client from the start
    start = time.perf_counter()
    gold_model = add_lora(copy.deepcopy(base), rank=fed.lora_rank, seed=fed.seed)
    gold = make_run_server("hyperlora", gold_model, fed, config.corpus)  # the run's public pretraining too
    run_rounds(gold, gold_model, measure.others, fed)
    retrain_s = time.perf_counter() - start

    results = {}
    with tempfile.TemporaryDirectory(prefix="hyperfed-compare-") as scratch:
        copies = {}
        for other in (m for m in compare_modes if m != mode):
            copies[other] = Path(scratch) / other
            shutil.copytree(rd.root, copies[other])
        results[mode] = (forget_client(rd, client_id, mode), rd)
        for other, root in copies.items():
            results[other] = (forget_client(root, client_id, other), RunDirectory(root))
        for name, (result, where) in results.items():
            after = where.load_checkpoint(latest)
            rows.append(measure.row(f"after {name}", newcomer_adapter(after), after, result.seconds))
        rows.append(measure.row("retrain (gold)", newcomer_adapter(gold.hypernet), gold.hypernet, retrain_s))
        attacked = {name: where.load_checkpoint(latest) for name, (_, where) in results.items()}
    attacked["retrain"] = gold.hypernet
    for name, target in attacked.items():
        emb = embedding_recovery_attack(target, model, measure.data.val, steps=attack_steps, seed=0)
        rows.append(measure.row(f"attack on {name}", adapter_from_embedding(target, emb), None, membership=False))
    prefixes = [c.format.prefix for c in measure.canaries]
    for name, target in attacked.items():
        adapter = residual_recovery_attack(target, model, measure.data.val, prefixes, steps=attack_steps, seed=0)
        rows.append(measure.row(f"strong attack on {name}", adapter, None, membership=False))

    report = VerificationReport(
        client_id,
        mode,
        rows,
        math.log2(num_candidates + 1) if measure.canaries else None,
        len(measure.canaries),
        {name: retrain_s / max(result.seconds, 1e-9) for name, (result, _) in results.items()},
        excess_removed_by_row(rows),
        guarantee=results[mode][0].guarantee or shared_guarantee(rd.read_json(rd.config_path), latest),
    )
    out = rd.forget_dir(client_id)
    rd.write_json(out / "report.json", report.to_dict())
    plot_report(report, out / "report.png")
    return report


def excess_removed(before: float, after: float, gold: float, epsilon: float = EXCESS_EPSILON_BITS) -> float | None:
    """``(before − after) / (before − gold)``: the fraction of the excess exposure a forget removed.

    1.0 = as forgotten as retraining without the client, 0.0 = nothing removed; values above 1
    (below gold) or below 0 (above before) are returned as measured. ``None`` when
    ``before − gold < epsilon``: the client left no measurable excess, so no fraction exists.
    """
    gap = before - gold
    if not gap >= epsilon:  # also catches NaN
        return None
    return (before - after) / gap


def excess_removed_by_row(rows: list[VerificationRow], epsilon: float = EXCESS_EPSILON_BITS) -> dict[str, float | None]:
    """Excess exposure removed for every ``after <mode>`` row (gold: ``retrain (gold)``) and every
    ``[strong ]attack on <mode>`` row (gold: the same attack on ``retrain``); ``{}`` without canaries."""
    by_name = {r.name: r.exposure_bits for r in rows}
    before = by_name.get("before forget")
    if before is None:
        return {}
    out: dict[str, float | None] = {}
    for name, exposure in by_name.items():
        if exposure is None:
            continue
        attack, _, target = name.partition(" on ")
        if name.startswith("after "):
            gold = by_name.get("retrain (gold)")
        elif attack in ("attack", "strong attack") and target and target != "retrain":
            gold = by_name.get(f"{attack} on retrain")
        else:
            continue
        if gold is not None:
            out[name] = excess_removed(before, exposure, gold, epsilon)
    return out


def shared_guarantee(run_json: Mapping, rounds: int) -> dict:
    """The run's shared-weight policy (``run.json`` → ``federation.shared_policy``, missing =
    ``"shared"``) and what it guarantees, from :func:`hyperfed.federation.privacy.describe_guarantee`."""
    from hyperfed.config import RunConfig
    from hyperfed.federation.privacy import describe_guarantee

    return dict(describe_guarantee(RunConfig.from_dict(dict(run_json)).federation, rounds))


def render_report(report: VerificationReport) -> str:
    """The report as a terminal table."""
    from hyperfed.render import format_table

    def show(value: float | None, fmt: str) -> str:
        return "—" if value is None else format(value, fmt)

    def share(name: str) -> str:
        if name not in report.excess_removed:
            return "—"
        value = report.excess_removed[name]
        return "n/a" if value is None else f"{value:.0%}"

    rows = [
        {
            "system": r.name,
            "exposure (bits)": show(r.exposure_bits, ".2f"),
            "excess removed": share(r.name),
            "MIA AUC": show(r.mia_auc, ".3f"),
            "client loss": show(r.forgotten_loss, ".4f"),
            "retained loss": show(r.retained_loss, ".4f"),
            "time (s)": show(r.seconds, ".2f"),
        }
        for r in report.rows
    ]
    title = (
        f"Unlearning report for {report.client_id!r} ({report.mode}); {report.canaries} canaries, "
        f"exposure ceiling {show(report.exposure_ceiling_bits, '.2f')} bits, chance ≈ 1.44"
    )
    speed = ", ".join(f"{m} {x:.3g}× the speed of retraining" for m, x in report.speedup_vs_retrain.items())
    g = report.guarantee
    guarantee = f"\nshared weights: {g['policy']!r}; guarantee: {g['guarantee']} — {g['text']}" if g else ""
    note = (
        "\nexcess removed = (before − after) / (before − gold); attacks: gold = the same attack on retrain"
        if report.excess_removed
        else ""
    )
    return format_table(rows, title=title) + (f"\n{speed}" if speed else "") + note + guarantee


def plot_report(report: VerificationReport, path: Path) -> Path:
    from matplotlib.figure import Figure  # no pyplot: leaves the caller's backend alone

    names = [r.name for r in report.rows]
    fig = Figure(figsize=(18, 4))
    axes = fig.subplots(1, 4)
    series = [
        ("canary exposure (bits)", [r.exposure_bits or 0.0 for r in report.rows]),
        ("membership AUC (0.5 = chance)", [math.nan if r.mia_auc is None else r.mia_auc for r in report.rows]),
        ("forgotten client's loss (nats/byte)", [r.forgotten_loss for r in report.rows]),
    ]
    for ax, (title, values) in zip(axes[:3], series, strict=True):
        colors = [
            "grey"
            if n == "base model"
            else "tab:red"
            if n == "before forget"
            else "tab:green"
            if "retrain" in n
            else "tab:blue"
            for n in names
        ]
        ax.barh(names, values, color=colors)
        ax.set_title(title, fontsize=9)
        ax.invert_yaxis()
        ax.tick_params(labelsize=7)
    axes[1].axvline(0.5, color="k", ls="--", lw=0.8)
    points = frontier_points(report.to_dict()["rows"])
    if points:
        draw_frontier(axes[3], points)
    axes[3].set_title("frontier: remaining clients' loss vs exposure", fontsize=9)
    fig.suptitle(f"Forgetting {report.client_id} ({report.mode}) vs retraining without it")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
