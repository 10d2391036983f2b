"""Where a round's time goes: HyperLoRA vs FedAvg-LoRA, phase by phase, side by side.

Run:  python bench/round_profile.py [--out bench/results/round_profile.json] [--quick]
          [--repeats 3] [--rounds N] [--engine flower|loop]

Each method is run the way the demo runs it (:func:`hyperfed.experiment.run_method`: the
Flower in-process grid by default, HyperLoRA recorded to a run directory and its embedded
ledger, FedAvg-LoRA not recorded), interleaved in one process (HyperLoRA, FedAvg, FedAvg,
HyperLoRA, …) and repeated, so machine load hits both alike. Library functions are wrapped
with ``time.perf_counter``; time is attributed *exclusively* to the innermost phase
running (a phase nested in another is subtracted from it):

==============  ===================================================================
generate        server ``configure_round`` (HyperLoRA: one batched generation)
train           client local training (``local_round``)
aggregate       server ``aggregate_round`` (screening + pFedHN update vs FedAvg)
record/*        ``RunRecorder``: adapter files, checkpoint (incl. optimizer state),
                ledger records, fsyncs (``os.fsync`` time, counted), other (hashes,
                commitments, digests re-read from the checkpoint, opening the ledger)
evaluate/*      server side (adapters for every client) and client side (val loss)
serialise       Flower ``wire_roundtrip`` + adapter ↔ ArrayRecord conversion
setup           LoRA model copy + server construction
other           the rest of the run's wall time (Flower message plumbing, logging)
==============  ===================================================================

Every figure is seconds per round (run total / rounds; round 0's evaluation and
checkpoint included); the table shows the median over repetitions and the spread
(max − min), and the ratio HyperLoRA / FedAvg-LoRA of the medians.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.results_io import machine_info, write_result  # noqa: E402
from hyperfed.base_model import BaseModelConfig, load_or_build_base_model  # noqa: E402
from hyperfed.config import EvaluationConfig, RunConfig  # noqa: E402
from hyperfed.data.corpus import CorpusConfig, build_corpus  # noqa: E402
from hyperfed.federation import FederationConfig  # noqa: E402
from hyperfed.render import format_table  # noqa: E402
from hypernet import LocalTrainConfig  # noqa: E402

METHODS = ("hyperlora", "fedavg")
PHASES = (
    "generate",
    "train",
    "aggregate",
    "record/adapters",
    "record/checkpoint",
    "record/ledger",
    "record/fsync",
    "record/other",
    "evaluate/server",
    "evaluate/client",
    "serialise",
    "setup",
    "other",
)


class PhaseClock:
    """Exclusive time per phase: a phase entered inside another pauses the outer one."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._stack: list[list[Any]] = []  # [phase, started, nested seconds]
        self.round_ends: list[float] = []  # perf_counter at the end of each aggregate_round

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        frame: list[Any] = [name, time.perf_counter(), 0.0]
        self._stack.append(frame)
        try:
            yield
        finally:
            self._stack.pop()
            total = time.perf_counter() - frame[1]
            self.seconds[name] += total - frame[2]
            self.calls[name] += 1
            if self._stack:
                self._stack[-1][2] += total
            if name == "aggregate":
                self.round_ends.append(time.perf_counter())

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()
        self.round_ends.clear()


def _wrap(clock: PhaseClock, owner: Any, attr: str, phase: str, patches: list) -> None:
    original = getattr(owner, attr)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with clock.phase(phase):
            return original(*args, **kwargs)

    patches.append((owner, attr, original))
    setattr(owner, attr, wrapped)


@contextlib.contextmanager
def instrumented(clock: PhaseClock) -> Iterator[None]:
    """Wrap the library's phase functions (and ``os.fsync``) for the duration."""
    import hyperfed.experiment as experiment
    import hyperfed.federation.loop as loop
    import hyperfed.flower.client_app as client_app
    import hyperfed.flower.inprocess as inprocess
    import hyperfed.flower.strategy as strategy
    from hyperfed.federation.servers import AdapterServer, HyperLoRAServer
    from hyperfed.ledger.client import Ledger
    from hyperfed.rundir.layout import RunDirectory
    from hyperfed.rundir.recorder import RunRecorder

    patches: list = []
    for owner in (AdapterServer, HyperLoRAServer):
        if "configure_round" in vars(owner):
            _wrap(clock, owner, "configure_round", "generate", patches)
    _wrap(clock, AdapterServer, "aggregate_round", "aggregate", patches)
    for module in (client_app, loop):
        _wrap(clock, module, "local_round", "train", patches)
        for name in ("evaluate_client", "evaluate_splits"):
            if hasattr(module, name):
                _wrap(clock, module, name, "evaluate/client", patches)
    _wrap(clock, strategy.AdapterStrategy, "evaluation_messages", "evaluate/server", patches)
    _wrap(clock, experiment, "evaluate_all_splits", "evaluate/server", patches)  # loop engine; clients nest inside
    _wrap(clock, inprocess, "wire_roundtrip", "serialise", patches)
    _wrap(clock, strategy, "adapter_to_record", "serialise", patches)
    _wrap(clock, client_app, "record_to_adapter", "serialise", patches)
    _wrap(clock, client_app, "reply_to_content", "serialise", patches)
    _wrap(clock, strategy, "content_to_reply", "serialise", patches)
    _wrap(clock, RunDirectory, "save_adapter", "record/adapters", patches)
    _wrap(clock, RunDirectory, "save_checkpoint", "record/checkpoint", patches)
    for name in ("register_client", "record_generation", "record_checkpoint", "record_checkpoint_files", "flush"):
        _wrap(clock, Ledger, name, "record/ledger", patches)
    for name in ("open", "record_round", "record_checkpoint", "close"):
        _wrap(clock, RunRecorder, name, "record/other", patches)
    _wrap(clock, experiment, "add_lora", "setup", patches)
    _wrap(clock, experiment, "make_run_server", "setup", patches)  # incl. any public pretraining
    _wrap(clock, os, "fsync", "record/fsync", patches)
    try:
        yield
    finally:
        for owner, attr, original in reversed(patches):
            setattr(owner, attr, original)


def build_config(quick: bool, rounds: int | None, engine: str) -> RunConfig:
    """The demo's configuration (or a tiny one), for ``engine``."""
    if quick:
        config = RunConfig(
            federation=FederationConfig(rounds=2, local=LocalTrainConfig(steps=2, batch_size=2), lora_rank=2),
            corpus=CorpusConfig(domains=("code", "docs"), clients_per_domain=2, train_kib=2, val_kib=1, block_size=64),
            base_model=BaseModelConfig(
                hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, steps=10, batch_size=4, block_size=64
            ),
            evaluation=EvaluationConfig(every=1),
        )
    else:
        from hyperfed.cli import DEMO_FORGET_CLIENT

        config = RunConfig(corpus=CorpusConfig(canary_client=DEMO_FORGET_CLIENT))
    config = replace(config, engine=engine, methods=METHODS)
    if rounds is not None:
        config = replace(config, federation=replace(config.federation, rounds=rounds))
    return config


def profile_once(method: str, base: torch.nn.Module, corpus: Any, config: RunConfig, clock: PhaseClock) -> dict:
    """One run of ``method`` (recorded like the demo): seconds per round by phase, fsync count."""
    from hyperfed.experiment import run_method
    from hyperfed.rundir import RunDirectory

    with tempfile.TemporaryDirectory(dir=os.environ.get("ROUND_PROFILE_TMP")) as tmp:
        run_dir = RunDirectory(Path(tmp) / "run")
        run_dir.root.mkdir(parents=True)
        run_dir.write_json(run_dir.config_path, config.to_dict())
        clock.reset()
        with instrumented(clock):
            start = time.perf_counter()
            _, final, _, _, _ = run_method(method, base, corpus, config, run_dir=run_dir)
            wall = time.perf_counter() - start
    rounds = config.federation.rounds
    row = {phase: clock.seconds.get(phase, 0.0) / rounds for phase in PHASES if phase != "other"}
    row["other"] = wall / rounds - sum(row.values())
    row["total"] = wall / rounds
    ends = [start, *clock.round_ends]
    return {
        "per_round_s": row,
        # wall time from the previous round's aggregation to this one's (round 1: from the start,
        # so it includes setup and the round-0 evaluation and checkpoint)
        "round_wall_s": [b - a for a, b in zip(ends, ends[1:], strict=False)],
        "fsyncs_per_round": clock.calls.get("record/fsync", 0) / rounds,
        "mean_loss": sum(final.values()) / len(final),
    }


def summarise(runs: dict[str, list[dict]]) -> list[dict]:
    """Median and spread (max − min) per phase and method, and the HyperLoRA/FedAvg ratio."""
    rows = []
    for phase in (*PHASES, "total"):
        row: dict[str, Any] = {"phase": phase}
        medians = {}
        for method in METHODS:
            values = [r["per_round_s"][phase] for r in runs[method]]
            medians[method] = statistics.median(values)
            row[f"{method}_ms"] = medians[method] * 1e3
            row[f"{method}_spread_ms"] = (max(values) - min(values)) * 1e3
        row["ratio"] = medians["hyperlora"] / medians["fedavg"] if medians["fedavg"] > 1e-6 else "—"
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bench/results/round_profile.json")
    parser.add_argument("--quick", action="store_true", help="tiny corpus/model, 2 rounds (a smoke test)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per method, interleaved")
    parser.add_argument("--rounds", type=int, default=None, help="override the rounds (default: the demo's 15)")
    parser.add_argument("--engine", default="flower", choices=("flower", "loop"))
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    config = build_config(args.quick, args.rounds, args.engine)
    base = load_or_build_base_model(config.base_model)
    corpus = build_corpus(config.corpus)
    clock = PhaseClock()
    runs: dict[str, list[dict]] = {m: [] for m in METHODS}
    for rep in range(args.repeats):
        order = METHODS if rep % 2 == 0 else METHODS[::-1]  # ABBA: neither always runs first
        for method in order:
            runs[method].append(profile_once(method, base, corpus, config, clock))
            print(f"rep {rep} {method}: {runs[method][-1]['per_round_s']['total']:.3f} s/round", flush=True)
    table = summarise(runs)
    fed = config.federation
    budget = f"{fed.rounds} rounds × {len(corpus.client_ids)} clients × {fed.local.steps} local steps"
    print(
        format_table(
            table,
            title=f"\nms per round, median (spread) of {args.repeats} interleaved runs; {budget}; engine {args.engine}",
        )
    )
    result: dict = {
        "machine": machine_info(),
        "setup": {
            "engine": args.engine,
            "rounds": fed.rounds,
            "clients": len(corpus.client_ids),
            "local_steps": fed.local.steps,
            "sample_rate": fed.sample_rate,
            "repeats": args.repeats,
            "quick": args.quick,
        },
        "phases": table,
        "fsyncs_per_round": {m: statistics.median(r["fsyncs_per_round"] for r in runs[m]) for m in METHODS},
        "total_ratio": table[-1]["ratio"],
        "runs": runs,
    }
    print(f"fsyncs per round: {result['fsyncs_per_round']}; total ratio HyperLoRA/FedAvg {result['total_ratio']:.3f}")
    write_result(args.out, result)
    return result


if __name__ == "__main__":
    main()
