"""Benchmark unlearning: forget latency vs retraining, and efficacy of each mode.

Run:  python bench/unlearning.py [--out bench/results/unlearning.json] [--quick]

1. Latency at 10, 100 and 1000 clients: a recorded HyperLoRA run (tiny model, Poisson
   sampling of ~20 clients per round) is built, then one client is forgotten in delete
   mode — every step included: purge of all checkpoints and adapter files, regeneration of
   every remaining adapter, salt destruction and the ledger record. Retraining = running the
   same rounds again without that client. Reported: seconds and the speed-up.
2. Efficacy on the demo setup (canaries planted in one client): exposure, excess exposure
   removed ((before − after) / (before − gold)), membership AUC and retained loss for delete
   vs exact vs retraining, next to the base model, and both recovery attacks (embedding only;
   embedding + residual fitted with the canary prefixes) on each. The utility ↔ unlearning
   frontier (remaining clients' loss vs exposure, one point per system) is written as a PNG
   next to the JSON (``<out stem>_frontier.png``).
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.results_io import machine_info, write_result  # noqa: E402
from hyperfed.base_model import BaseModelConfig  # noqa: E402
from hyperfed.config import EvaluationConfig, RunConfig
from hyperfed.data.corpus import CorpusConfig  # noqa: E402
from hyperfed.experiment import run_experiment  # noqa: E402
from hyperfed.federation import FederationConfig, make_server, run_rounds  # noqa: E402
from hyperfed.render import format_table  # noqa: E402
from hyperfed.rundir import RunDirectory  # noqa: E402
from hyperfed.rundir.recorder import RunRecorder  # noqa: E402
from hyperfed.unlearning import forget_client  # noqa: E402
from hyperfed.unlearning.frontier import frontier_points, plot_frontier  # noqa: E402
from hyperfed.unlearning.report import VerificationReport, forget_and_verify  # noqa: E402
from hypernet import (
    ClientData,  # noqa: E402
    LocalTrainConfig,
)
from hypernet.base_models import add_lora, tiny_llama  # noqa: E402


def recorded_run(root: Path, n_clients: int, rounds: int) -> tuple[dict, FederationConfig, torch.nn.Module]:
    g = torch.Generator().manual_seed(0)
    clients = {
        f"client-{i:04d}": ClientData(
            torch.randint(0, 256, (8, 32), generator=g), torch.randint(0, 256, (2, 32), generator=g)
        )
        for i in range(n_clients)
    }
    config = FederationConfig(
        rounds=rounds, sample_rate=min(1.0, 20 / n_clients), local=LocalTrainConfig(steps=2, batch_size=4), lora_rank=4
    )
    model = add_lora(tiny_llama(hidden_size=64, num_layers=2), rank=4)
    server = make_server("hyperlora", copy.deepcopy(model), config)
    server.register(sorted(clients))
    with RunRecorder.open(RunDirectory(root)) as recorder:
        recorder.register_clients(sorted(clients), server.hypernet)
        recorder.record_checkpoint(0, server.hypernet, server.trainer)
        run_rounds(server, server.trainer.model, clients, config, callback=recorder.round_callback(server))
    return clients, config, model


def bench_latency(sizes: tuple[int, ...], rounds: int) -> list[dict]:
    rows = []
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / "run"
            clients, config, model = recorded_run(root, n, rounds)
            victim = sorted(clients)[0]
            result = forget_client(root, victim, "delete")
            start = time.perf_counter()
            retrain = make_server("hyperlora", copy.deepcopy(model), config)
            run_rounds(retrain, retrain.trainer.model, {c: d for c, d in clients.items() if c != victim}, config)
            retrain_s = time.perf_counter() - start
        rows.append(
            {
                "clients": n,
                "forget_delete_s": result.seconds,
                "retrain_s": retrain_s,
                "speedup": retrain_s / result.seconds,
            }
        )
        print(format_table([rows[-1]]), flush=True)
    return rows


def bench_late_exact(quick: bool) -> dict:
    """Exact forget of the client that joined latest (its first round ≥ 3/4 of the run) vs
    retraining: the replay from its first round against a replay from round 1 (the same
    machinery: the full retrain), on ~100 sharded clients with a small base model."""
    from hyperfed.unlearning.replay import replay_without

    shards, rounds = (2, 4) if quick else (13, 16)
    config = RunConfig(
        federation=FederationConfig(
            rounds=rounds, sample_rate=0.2, local=LocalTrainConfig(steps=2, batch_size=4), lora_rank=4
        ),
        corpus=CorpusConfig(
            domains=("code", "docs"), clients_per_domain=4, shards=shards, train_kib=1, val_kib=0.25, block_size=64
        ),
        base_model=BaseModelConfig(
            hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1, steps=20, batch_size=4, block_size=64
        ),
        methods=("hyperlora",),
        engine="loop",
        evaluation=EvaluationConfig(every=rounds),
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "run"
        run_experiment(root, config)
        rd = RunDirectory(root)
        first = {}
        for round_ in rd.adapter_rounds():
            for cid in rd.adapter_clients(round_):
                first.setdefault(cid, round_)
        victim, joined = max(first.items(), key=lambda kv: (kv[1], kv[0]))
        start = time.perf_counter()
        replay_without(rd, victim, 1, rounds)
        retrain_s = time.perf_counter() - start
        result = forget_client(root, victim, "exact")
    row = {
        "clients": len(first),
        "rounds": rounds,
        "victim_first_round": joined,
        "replayed_rounds": len(result.replayed_rounds),
        "exact_forget_s": result.seconds,
        "retrain_s": retrain_s,
        "speedup": retrain_s / result.seconds,
    }
    print(format_table([row], title="Exact forget of the latest joiner vs retraining"), flush=True)
    return row


def efficacy_rows(report: VerificationReport) -> list[dict]:
    """The report's rows as bench rows: excess removed is a fraction, "n/a" (no excess to remove)
    or "" (not a forget or attack row)."""

    def excess(name: str) -> float | str:
        if name not in report.excess_removed:
            return ""
        value = report.excess_removed[name]
        return "n/a" if value is None else value

    return [
        {
            "system": r.name,
            "exposure_bits": r.exposure_bits,
            "excess_removed": excess(r.name),
            "mia_auc": r.mia_auc if r.mia_auc is not None else "",
            "client_loss": r.forgotten_loss,
            "retained_loss": r.retained_loss if r.retained_loss is not None else "",
            "seconds": r.seconds if r.seconds is not None else "",
        }
        for r in report.rows
    ]


#: The efficacy part's tiny setup (``--quick``): a smoke test of every step, not a measurement.
QUICK_EFFICACY = RunConfig(
    federation=FederationConfig(rounds=2, local=LocalTrainConfig(steps=2, batch_size=2), lora_rank=2),
    corpus=CorpusConfig(
        domains=("code", "docs"),
        clients_per_domain=2,
        train_kib=2,
        val_kib=1,
        block_size=64,
        canary_client="code/asyncio",
        canary_count=2,
        canary_copies=4,
    ),
    base_model=BaseModelConfig(
        hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, steps=10, batch_size=4, block_size=64
    ),
    methods=("hyperlora",),
    evaluation=EvaluationConfig(every=2),
)


def bench_efficacy(quick: bool) -> VerificationReport:
    if quick:
        config = QUICK_EFFICACY
        victim, candidates, attack = "code/asyncio", 50, 5
    else:
        config = RunConfig(corpus=CorpusConfig(canary_client="code/email"), methods=("hyperlora",))
        victim, candidates, attack = "code/email", 1000, 100
    with tempfile.TemporaryDirectory() as tmp:
        run_experiment(Path(tmp) / "run", config)
        report = forget_and_verify(
            Path(tmp) / "run",
            victim,
            "delete",
            compare_modes=("exact",),
            num_candidates=candidates,
            attack_steps=attack,
        )
    return report


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bench/results/unlearning.json")
    parser.add_argument("--quick", action="store_true", help="tiny settings (a smoke test, not a measurement)")
    parser.add_argument("--no-latency", action="store_true", help="only the efficacy part")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    sizes, rounds = ((10, 30), 1) if args.quick else ((10, 100, 1000), 3)
    result: dict = {"machine": machine_info()}
    if not args.no_latency:
        result["latency"] = bench_latency(sizes, rounds)
        print(format_table(result["latency"], title="Forget (delete) vs retraining without the client"))
    result["late_exact"] = bench_late_exact(args.quick)
    report = bench_efficacy(args.quick)
    result["efficacy"] = efficacy_rows(report)
    result["guarantee"] = report.guarantee
    result["frontier"] = frontier_points(result["efficacy"])
    print(format_table(result["efficacy"], title="\nEfficacy: delete vs exact vs retraining (gold)"))
    out = write_result(args.out, result)
    policy = report.guarantee.get("policy", "shared")
    png = plot_frontier(
        result["frontier"], out.with_name(f"{out.stem}_frontier.png"), f"Forgetting {report.client_id} ({policy})"
    )
    print(f"wrote {png}")
    return result


if __name__ == "__main__":
    main()
