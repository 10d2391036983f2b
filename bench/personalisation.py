"""Benchmark personalisation the way a reviewer accepts it: every method, seeds, a stated LR grid.

Run:  python bench/personalisation.py [--out bench/results/personalisation.json] [--quick]
                                      [--seeds 0 1 2] [--rounds 15] [--methods hyperlora fedavg ...]
                                      [--policy shared|frozen|dp] [--residual|--no-residual]
      python bench/personalisation.py --merge PART.json PART.json ... --out RESULT.json

Protocol (the experiment's, :mod:`hyperfed.experiment`):

* each client's text is split into train / validation / test (disjoint; test at the very
  end of its source);
* every method runs the same client budget: ``rounds`` × ``local steps`` × sampled clients
  (Poisson rate ``sample_rate``); ``fedavg_ft`` additionally fine-tunes at evaluation, at
  most ``max(METHODS["fedavg_ft"].finetune_steps)`` extra steps per client, chosen on val;
* every run is early-stopped: it is reported at the evaluated round (round 0 included) with
  the lowest mean validation loss (:func:`hyperfed.experiment.select_round`);
* every method's learning rates are chosen from :data:`GRID` by the mean over seeds of its
  selected-round mean *validation* loss; the chosen setting is reported on *test*: mean ±
  std over seeds of the mean test loss, and per client the method with the lowest test loss
  (mean over seeds) wins that client.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.results_io import machine_info, write_result  # noqa: E402
from hyperfed.base_model import BaseModelConfig, load_or_build_base_model  # noqa: E402
from hyperfed.config import EvaluationConfig, RunConfig  # noqa: E402
from hyperfed.data.corpus import CorpusConfig, build_corpus  # noqa: E402
from hyperfed.experiment import SELECTION_RULE, run_method, select_round  # noqa: E402
from hyperfed.federation import METHODS, method_label  # noqa: E402
from hyperfed.render import format_table  # noqa: E402
from hypernet import LocalTrainConfig  # noqa: E402

#: The stated grid: every method tries each client (local) learning rate; HyperLoRA also
#: each server (hypernetwork Adam) learning rate.
GRID: dict[str, dict[str, tuple[float, ...]]] = {
    "*": {"local_lr": (1e-3, 3e-3)},
    "hyperlora": {"local_lr": (1e-3, 3e-3), "server_lr": (1e-3, 3e-3)},
}


#: One setting per method: what :data:`GRID` chose on validation in the committed run
#: (bench/results/personalisation.json: 16 KiB, three domains, seeds 0–2) — for runs that
#: cannot afford the grid (``--chosen``, the sweep).
CHOSEN: dict[str, dict[str, tuple[float, ...]]] = {
    "*": {"local_lr": (3e-3,)},
    "hyperlora": {"local_lr": (3e-3,), "server_lr": (1e-3,)},
}


#: What :data:`GRID` chose on validation with public pretraining (``--public-share 0.5
#: --public-pretrain-rounds 30``; bench/results/personalisation_public.json, seeds 0–2).
CHOSEN_PUBLIC: dict[str, dict[str, tuple[float, ...]]] = {
    "*": {"local_lr": (3e-3,)},
    "hyperlora": {"local_lr": (3e-3,), "server_lr": (3e-3,)},
}


def grid_points(method: str, grid: dict[str, dict[str, tuple[float, ...]]] = GRID) -> list[dict[str, float]]:
    """Every setting of ``method``'s grid, as ``{"local_lr": …, "server_lr": …}`` dicts."""
    axes = grid.get(method, grid["*"])
    return [dict(zip(axes, values, strict=True)) for values in itertools.product(*axes.values())]


def configure(base: RunConfig, method: str, point: dict[str, float], seed: int) -> RunConfig:
    """``base`` for one run: ``method``, the grid ``point``'s learning rates and ``seed``."""
    fed = base.federation
    local = replace(fed.local, lr=point.get("local_lr", fed.local.lr))
    server = replace(
        fed.server,
        lr=point.get("server_lr", fed.server.lr),
        embedding_lr=point.get("embedding_lr", fed.server.embedding_lr),
    )
    return replace(base, federation=replace(fed, method=method, seed=seed, local=local, server=server))


def run_one(base_model: torch.nn.Module, corpus: Any, config: RunConfig, method: str) -> dict[str, Any]:
    """One early-stopped run: its selected round, mean validation there, per-client test there."""
    start = time.perf_counter()
    _, _, curve, _, test_curve = run_method(method, base_model, corpus, config)
    chosen = select_round(curve)
    val = dict(curve)[chosen]
    test = dict(test_curve)[chosen]
    return {
        "selected_round": chosen,
        "mean_val": statistics.fmean(val.values()),
        "mean_test": statistics.fmean(test.values()),
        "test": test,
        "seconds": time.perf_counter() - start,
    }


def _std(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(runs: list[dict[str, Any]], base_test: dict[str, float]) -> dict[str, Any]:
    """Choose each method's grid point on mean val over seeds; report it on test."""
    chosen: dict[str, dict[str, Any]] = {}
    for method in dict.fromkeys(r["method"] for r in runs):
        by_point: dict[str, list[dict[str, Any]]] = {}
        for r in runs:
            if r["method"] == method:
                by_point.setdefault(r["setting"], []).append(r)
        setting, seeds = min(by_point.items(), key=lambda kv: statistics.fmean(r["mean_val"] for r in kv[1]))
        chosen[method] = {"setting": setting, "runs": seeds}
    clients = sorted(base_test)
    per_client_test = {
        m: {c: statistics.fmean(r["test"][c] for r in v["runs"]) for c in clients} for m, v in chosen.items()
    }
    winners = {c: min(per_client_test, key=lambda m: per_client_test[m][c]) for c in clients}
    table = []
    for method, v in chosen.items():
        tests = [r["mean_test"] for r in v["runs"]]
        table.append(
            {
                "method": method_label(method),
                "setting": v["setting"],
                "seeds": len(tests),
                "test_mean": statistics.fmean(tests),
                "test_std": _std(tests),
                "val_mean": statistics.fmean(r["mean_val"] for r in v["runs"]),
                "selected_rounds": ",".join(str(r["selected_round"]) for r in v["runs"]),
                "clients_won": sum(w == method for w in winners.values()),
                "seconds_per_run": statistics.fmean(r["seconds"] for r in v["runs"]),
            }
        )
    table.append(
        {
            "method": "base model",
            "setting": "-",
            "seeds": 1,
            "test_mean": statistics.fmean(base_test.values()),
            "test_std": 0.0,
        }
    )
    per_client = [
        {"client": c, "base": base_test[c]}
        | {method_label(m): per_client_test[m][c] for m in chosen}
        | {"best": method_label(winners[c])}
        for c in clients
    ]
    pairwise = []
    if "hyperlora" in chosen:
        for other in (m for m in chosen if m != "hyperlora"):
            better = sum(per_client_test["hyperlora"][c] < per_client_test[other][c] for c in clients)
            pairwise.append({"vs": method_label(other), "hyperlora_better_on": f"{better}/{len(clients)}"})
    return {
        "table": table,
        "per_client": per_client,
        "pairwise": pairwise,
        "chosen": {m: v["setting"] for m, v in chosen.items()},
    }


def run_setting(
    base: RunConfig,
    methods: list[str],
    seeds: list[int],
    label: str = "",
    on_run: Callable[[dict[str, Any]], None] | None = None,
    grid: dict[str, dict[str, tuple[float, ...]]] = GRID,
) -> dict[str, Any]:
    """Every method × ``grid`` point × seed on ``base``'s corpus and base model (``on_run`` is
    called with the summary so far after each run, so a cut-off run leaves its data)."""
    corpus = build_corpus(base.corpus)
    base_model = load_or_build_base_model(base.base_model)
    probe = copy.deepcopy(base_model)
    from hypernet import evaluate_loss
    from hypernet.base_models import add_lora

    probe = add_lora(probe, rank=base.federation.lora_rank)
    base_test = {cid: evaluate_loss(probe, None, d.test) for cid, d in corpus.clients.items() if d.test is not None}
    runs = []
    for seed in seeds:  # seed-major: a cut-off run has every method for its first seeds
        for method in methods:
            for point in grid_points(method, grid):
                setting = " ".join(f"{k}={v:g}" for k, v in point.items())
                result = run_one(base_model, corpus, configure(base, method, point, seed), method)
                runs.append({"method": method, "setting": setting, "seed": seed} | result)
                print(
                    f"{label}{method:>10} {setting:<30} seed {seed}: round {result['selected_round']:>2}, "
                    f"val {result['mean_val']:.4f}, test {result['mean_test']:.4f} ({result['seconds']:.0f} s)",
                    flush=True,
                )
                if on_run is not None:
                    on_run({"runs": runs, "base_test": base_test} | summarise(runs, base_test))
    return {"runs": runs, "base_test": base_test} | summarise(runs, base_test)


#: What results must share to be merged: the same setup, so their runs are one grid's runs.
MERGE_KEYS = (
    "rounds",
    "local_steps",
    "sample_rate",
    "clients",
    "client_steps",
    "evaluate_every",
    "engine",
    "corpus",
    "hyperlora_policy",
    "hyperlora_residual",
    "public_share",
    "public_pretrain_rounds",
)


def merge(paths: list[str]) -> dict[str, Any]:
    """The results in ``paths`` — parts of one grid run as separate processes (a method or a
    learning rate each) — as one result: their runs pooled and summarised again, so each
    method's setting is chosen on val over every grid point any part ran. The parts must
    share their setup (:data:`MERGE_KEYS`) and base-model test losses; a (method, setting,
    seed) run in two parts must have the same result (runs are deterministic)."""
    parts = [json.loads(Path(p).read_text()) for p in paths]
    first = parts[0]
    runs: dict[tuple[str, str, int], dict[str, Any]] = {}
    for path, part in zip(paths, parts, strict=True):
        for key in MERGE_KEYS:
            if part["setup"].get(key) != first["setup"].get(key):
                raise ValueError(f"{path}: setup {key} {part['setup'].get(key)!r} != {first['setup'].get(key)!r}")
        if part["base_test"] != first["base_test"]:
            raise ValueError(f"{path}: another base model (its base test losses differ from {paths[0]}'s)")
        for run in part["runs"]:
            key = (run["method"], run["setting"], run["seed"])
            if key in runs and runs[key]["test"] != run["test"]:
                raise ValueError(f"{path}: run {key} differs from the same run in another part")
            runs.setdefault(key, run)
    pooled = list(runs.values())
    grid = {
        m: sorted({r["setting"] for r in pooled if r["method"] == m})
        for m in dict.fromkeys(r["method"] for r in pooled)
    }
    seeds = sorted({run["seed"] for run in pooled})
    return {
        "complete": all(part.get("complete", True) for part in parts),
        "machine": first.get("machine", machine_info()),
        "protocol": SELECTION_RULE,
        "grid": grid,
        "setup": first["setup"] | {"seeds": seeds},
        "merged_from": [str(p) for p in paths],
        "runs": pooled,
        "base_test": first["base_test"],
        **summarise(pooled, first["base_test"]),
    }


def print_tables(result: dict[str, Any]) -> None:
    print()
    print(
        format_table(result["table"], title="Mean test loss at the selected round, setting chosen on val (nats/byte)")
    )
    print()
    print(format_table(result["per_client"], title="Per client: test loss (mean over seeds) of each chosen setting"))
    if result["pairwise"]:
        print()
        print(format_table(result["pairwise"]))


def base_config(
    quick: bool, rounds: int | None, train_kib: float | None = None, domains: tuple[str, ...] | None = None
) -> RunConfig:
    """The demo's setup (or a tiny one with ``quick``), engine ``loop``, no recording."""
    if quick:
        config = RunConfig(
            federation=replace(
                RunConfig().federation, rounds=2, lora_rank=2, local=LocalTrainConfig(steps=2, batch_size=2, lr=3e-3)
            ),
            corpus=CorpusConfig(
                domains=("code", "docs"), clients_per_domain=2, train_kib=1, val_kib=1, test_kib=1, block_size=32
            ),
            base_model=BaseModelConfig(
                hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, steps=5, batch_size=2, block_size=32
            ),
            evaluation=EvaluationConfig(every=1),
            engine="loop",
        )
    else:
        config = replace(RunConfig(), engine="loop")
    fed = config.federation if rounds is None else replace(config.federation, rounds=rounds)
    corpus = config.corpus
    if train_kib is not None:
        corpus = replace(corpus, train_kib=train_kib)
    if domains is not None:
        corpus = replace(
            corpus, domains=domains, clients_per_domain=min(4, max(corpus.clients_per_domain, 9 // len(domains)))
        )
    return replace(config, federation=fed, corpus=corpus)


def budget(config: RunConfig, n_clients: int) -> dict[str, Any]:
    fed = config.federation
    return {
        "rounds": fed.rounds,
        "local_steps": fed.local.steps,
        "sample_rate": fed.sample_rate,
        "clients": n_clients,
        "client_steps": fed.rounds * fed.local.steps * fed.sample_rate * n_clients,
        "evaluate_every": config.evaluation.every,
        "fedavg_ft_extra_steps_at_evaluation": max(METHODS["fedavg_ft"].finetune_steps),
    }


def _write_quietly(path: Path, result: dict[str, Any]) -> None:
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, default=str) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "personalisation.json"))
    parser.add_argument("--quick", action="store_true", help="tiny settings: checks the pipeline, not a measurement")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0 1 2 (quick: 0 1)")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--train-kib", type=float, default=None, help="train KiB per client (default: the demo's)")
    parser.add_argument("--local-steps", type=int, default=None, help="local steps per round (default: the demo's)")
    parser.add_argument("--evaluate-every", type=int, default=None, help="evaluation period in rounds")
    parser.add_argument(
        "--policy",
        choices=["shared", "frozen", "dp"],
        default="shared",
        help="HyperLoRA's shared-weight policy (frozen and dp with client-owned residual adapters, as the demo)",
    )
    parser.add_argument(
        "--residual",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="HyperLoRA's client-owned residual adapters (default: with frozen and dp, not with shared)",
    )
    parser.add_argument("--chosen", action="store_true", help="only each method's chosen setting (CHOSEN), no grid")
    parser.add_argument(
        "--public-share",
        type=float,
        default=None,
        help="share of the pretraining text withheld from the base model for public pseudo-clients",
    )
    parser.add_argument("--public-pretrain-rounds", type=int, default=None, help="HyperLoRA's public pretraining")
    parser.add_argument(
        "--merge",
        nargs="+",
        metavar="RESULT",
        help="pool the runs of these results (parts of one grid, same setup) into --out and summarise; runs nothing",
    )
    args = parser.parse_args(argv)
    if args.merge:
        merged = merge(args.merge)
        print_tables(merged)
        write_result(args.out, merged)
        return 0
    seeds = args.seeds or ([0, 1] if args.quick else [0, 1, 2])
    grid = CHOSEN if args.chosen else GRID
    config = base_config(args.quick, args.rounds, args.train_kib)
    if args.public_share is not None:
        config = replace(config, base_model=replace(config.base_model, public_share=args.public_share))
    if args.public_pretrain_rounds is not None:
        config = replace(
            config, federation=replace(config.federation, public_pretrain_rounds=args.public_pretrain_rounds)
        )
    if args.local_steps is not None:
        fed = config.federation
        config = replace(config, federation=replace(fed, local=replace(fed.local, steps=args.local_steps)))
    if args.evaluate_every is not None:
        config = replace(config, evaluation=EvaluationConfig(every=args.evaluate_every))
    config = replace(
        config,
        federation=replace(
            config.federation,
            shared_policy=args.policy,
            client_residual=args.policy != "shared" if args.residual is None else args.residual,
        ),
    )

    def document(result: dict[str, Any]) -> dict[str, Any]:
        planned = len(seeds) * sum(len(grid_points(m, grid)) for m in args.methods)
        return {
            "complete": len(result["runs"]) == planned,  # False in the .partial.json of a cut-off run
            "machine": machine_info(),
            "protocol": SELECTION_RULE,
            "grid": {m: {k: list(v) for k, v in axes.items()} for m, axes in grid.items()},
            "setup": budget(config, len(result["base_test"]))
            | {"seeds": seeds, "engine": config.engine, "corpus": repr(config.corpus), "quick": args.quick}
            | {"hyperlora_policy": args.policy, "hyperlora_residual": config.federation.client_residual}
            | {"public_share": config.base_model.public_share}
            | {"public_pretrain_rounds": config.federation.public_pretrain_rounds},
            **result,
        }

    partial = Path(args.out).with_suffix(".partial.json")
    result = run_setting(config, args.methods, seeds, on_run=lambda r: _write_quietly(partial, document(r)), grid=grid)
    partial.unlink(missing_ok=True)
    out = document(result)
    print_tables(result)
    write_result(args.out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
