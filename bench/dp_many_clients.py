"""Benchmark the ``dp`` policy where client-level DP can work: many clients, little data each.

Run:  python bench/dp_many_clients.py [--shards 32] [--rounds 20] [--sample-rate 0.25]
                                      [--noise 1.25] [--clip 0.05] [--dp-scope base|all]
                                      [--methods hyperlora,local,fedavg] [--skip-forget] [--seed 0]
                                      [--public-share 0.5] [--public-pretrain-rounds 30]
                                      [--out FILE] [--quick]

The corpus is the code and docs domains' eight sources, each cut into ``--shards`` clients
(``CorpusConfig.shards``; 32 → 256 clients of 1.5 KiB train, 0.375 KiB validation and
test each). HyperLoRA under ``dp`` (+ client-owned residual), local-only and FedAvg-LoRA
run the same Poisson-sampled budget; each is early-stopped on validation and reported on
test (the experiment's protocol; no learning-rate grid here: one stated setting). Then the
canary client is forgotten in delete mode and measured against the gold standard
(retrained without it): exposure, excess removed, both recovery attacks, forget time vs
retrain (only when HyperLoRA is among ``--methods``). ε at δ comes from Opacus's accountant
(:func:`~hyperfed.federation.privacy.describe_guarantee`). ``--dp-scope base`` privatises
only the base adapters (``FederationConfig.dp_scope``). ``--public-share`` withholds that
share of the pretraining text from the base model and ``--public-pretrain-rounds`` trains
the hypernetwork on it first (public pseudo-clients, no privacy cost): with scope ``base``
its trunk and heads then stay at their public values and each client's embedding steers them.
The defaults (0.5, 30 rounds) are the measured setting in which ``dp`` HyperLoRA beats
local-only; ``--public-share 0 --public-pretrain-rounds 0`` is the earlier setting (the base
model sees all the reserved text; HyperLoRA then ties local-only).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.results_io import machine_info, write_result  # noqa: E402
from bench.unlearning import efficacy_rows  # noqa: E402
from hyperfed.base_model import BaseModelConfig  # noqa: E402
from hyperfed.config import EvaluationConfig, RunConfig  # noqa: E402
from hyperfed.data.corpus import CorpusConfig  # noqa: E402
from hyperfed.experiment import run_experiment  # noqa: E402
from hyperfed.federation import FederationConfig, method_label  # noqa: E402
from hyperfed.federation.config import DP_SCOPES  # noqa: E402
from hyperfed.federation.privacy import describe_guarantee  # noqa: E402
from hyperfed.render import format_table  # noqa: E402
from hyperfed.unlearning.report import forget_and_verify  # noqa: E402
from hypernet import LocalTrainConfig  # noqa: E402

METHODS = ("hyperlora", "local", "fedavg")


def _methods(text: str) -> tuple[str, ...]:
    methods = tuple(m.strip() for m in text.split(",") if m.strip())
    unknown = sorted(set(methods) - set(METHODS))
    if unknown or not methods:
        raise argparse.ArgumentTypeError(f"methods must come from {', '.join(METHODS)}; got {text!r}")
    return methods


def many_client_config(args: argparse.Namespace) -> tuple[RunConfig, str]:
    """The run config and the canary client (shard 1 of ``code/email``)."""
    victim = "code/email." + "1".zfill(len(str(args.shards)))
    fed = FederationConfig(
        rounds=args.rounds,
        sample_rate=args.sample_rate,
        shared_policy="dp",
        client_residual=True,
        dp_noise_multiplier=args.noise,
        dp_clip=args.clip,
        dp_scope=args.dp_scope,
        public_pretrain_rounds=args.public_pretrain_rounds,
        seed=args.seed,
    )
    corpus = CorpusConfig(
        domains=("code", "docs"),
        clients_per_domain=4,
        shards=args.shards,
        train_kib=1.5,
        val_kib=0.375,
        test_kib=0.375,
        canary_client=victim,
        canary_count=5,
        canary_copies=8,
    )
    base, every = BaseModelConfig(public_share=args.public_share), args.every
    if args.quick:
        fed = replace(fed, lora_rank=2, local=LocalTrainConfig(steps=2, batch_size=2))
        base = BaseModelConfig(
            public_share=args.public_share,
            hidden_size=32,
            num_layers=1,
            num_heads=2,
            num_kv_heads=1,
            steps=10,
            batch_size=4,
        )
    return RunConfig(
        federation=fed,
        corpus=corpus,
        base_model=base,
        methods=args.methods,
        engine="loop",
        evaluation=EvaluationConfig(every=every),
    ), victim


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--sample-rate", type=float, default=0.25)
    parser.add_argument("--noise", type=float, default=1.25, help="noise multiplier z")
    parser.add_argument("--clip", type=float, default=0.05, help="clipping norm C of a client's shared gradient")
    parser.add_argument("--dp-scope", choices=DP_SCOPES, default="base", help="which shared weights learn under dp")
    parser.add_argument("--methods", type=_methods, default=METHODS, help="comma-separated, from " + ",".join(METHODS))
    parser.add_argument("--seed", type=int, default=0, help="seeds sampling, client training and the hypernetwork")
    parser.add_argument(
        "--public-share", type=float, default=0.5, help="share of the pretraining text the base model never sees"
    )
    parser.add_argument(
        "--public-pretrain-rounds", type=int, default=30, help="HyperLoRA's rounds on public pseudo-clients first"
    )
    parser.add_argument("--every", type=int, default=2, help="evaluate every this many rounds")
    parser.add_argument("--candidates", type=int, default=1000)
    parser.add_argument("--attack-steps", type=int, default=100)
    parser.add_argument("--skip-forget", action="store_true", help="measure utility only (no forget, no retrain)")
    parser.add_argument("--quick", action="store_true", help="tiny settings (a smoke test, not a measurement)")
    parser.add_argument("--out", default="bench/results/dp_many_clients.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.shards, args.rounds, args.every, args.candidates, args.attack_steps = 4, 2, 1, 50, 5
        args.public_pretrain_rounds = min(args.public_pretrain_rounds, 1)
    config, victim = many_client_config(args)
    forget = "hyperlora" in args.methods and not args.skip_forget
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        result = run_experiment(Path(tmp) / "run", config)
        trained_s = time.perf_counter() - started
        report = (
            forget_and_verify(
                Path(tmp) / "run", victim, "delete", num_candidates=args.candidates, attack_steps=args.attack_steps
            )
            if forget
            else None
        )
    test = {m: result.test(m) for m in args.methods}
    mean = {m: sum(v.values()) / len(v) for m, v in test.items()} | {
        "base": sum(result.base_test.values()) / len(result.base_test)
    }
    out = {
        "machine": machine_info(),
        "clients": len(result.base_test),
        "settings": vars(args),
        "guarantee": describe_guarantee(config.federation, config.federation.rounds),
        "mean_test_loss": mean,
        "selected_round": {m: result.selected_round(m) for m in args.methods},
        "train_s": trained_s,
    }
    if {"hyperlora", "local"} <= set(test):
        out["hyperlora_beats_local_on"] = [
            sum(test["hyperlora"][c] < test["local"][c] for c in test["local"]),
            len(test["local"]),
        ]
    if report is not None:
        out |= {
            "unlearning": efficacy_rows(report),
            "excess_removed": report.excess_removed,
            "speedup_vs_retrain": report.speedup_vs_retrain,
        }
    eps = out["guarantee"]["epsilon"]
    print(
        f"\n{out['clients']} clients, {args.rounds} rounds, q = {args.sample_rate}, z = {args.noise}, "
        f"C = {args.clip}, scope {args.dp_scope}: ε = {eps:.3g} at δ = {config.federation.dp_delta:g}"
    )
    rows = [
        {
            "method": method_label(m) if m != "base" else "base model",
            "mean test (nats/byte)": v,
            "selected round": out["selected_round"].get(m, "–"),
        }
        for m, v in mean.items()
    ]
    print(format_table(rows))
    if "hyperlora_beats_local_on" in out:
        wins, total = out["hyperlora_beats_local_on"]
        print(f"HyperLoRA (dp) beats local-only on {wins}/{total} clients")
    if report is not None:
        print(format_table(out["unlearning"], title=f"forgetting {victim} (delete)"))
    write_result(args.out, out)
    return out


if __name__ == "__main__":
    main()
