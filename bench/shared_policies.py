"""Benchmark the shared-weight policies side by side: utility *and* unlearning of each.

Run:  python bench/shared_policies.py [--policies frozen,dp,shared] [--rounds 15] [--quick]
                                      [--out bench/results/shared_policies.json]

For each policy the demo setup (engine ``loop``, seed 0, 5 canaries × 20 copies in
``code/email``) is trained with HyperLoRA — ``frozen`` and ``dp`` with client-owned
residual adapters, as the demo runs them — and, once, FedAvg-LoRA and local-only as the
references. Every method is early-stopped on validation and reported on test (the
evaluation protocol). Then ``code/email`` is forgotten in delete mode and measured
against the gold standard (the same run retrained without it): canary exposure, the
excess exposure removed = (before − after) / (before − gold), both recovery attacks
(embedding; embedding + residual on the canary prefixes) against the same attacks on
gold, forget time vs retraining, and the guarantee the forget states. One PNG puts every
policy on the utility ↔ unlearning frontier (``<out stem>.png``).

``dp`` on 9 clients is shown for completeness: client-level DP needs hundreds of clients
(``bench/dp_many_clients.py``); its ε here is large.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.results_io import machine_info, write_result  # noqa: E402
from bench.unlearning import QUICK_EFFICACY, efficacy_rows  # noqa: E402
from hyperfed.config import EvaluationConfig, RunConfig  # noqa: E402
from hyperfed.data.corpus import CorpusConfig  # noqa: E402
from hyperfed.experiment import run_experiment  # noqa: E402
from hyperfed.federation import FederationConfig, method_label  # noqa: E402
from hyperfed.render import format_table  # noqa: E402
from hyperfed.unlearning.frontier import frontier_points, plot_frontier  # noqa: E402
from hyperfed.unlearning.report import forget_and_verify  # noqa: E402

VICTIM = "code/email"
REFERENCES = ("fedavg", "local")
#: policy -> FederationConfig fields (dp: the many-client bench's clip and scope).
POLICIES: dict[str, dict[str, Any]] = {
    "frozen": {"shared_policy": "frozen", "client_residual": True},
    "dp": {
        "shared_policy": "dp",
        "client_residual": True,
        "dp_noise_multiplier": 1.0,
        "dp_clip": 0.05,
        "dp_scope": "base",
    },
    "shared": {"shared_policy": "shared"},
}


def base_config(rounds: int, quick: bool) -> tuple[RunConfig, int, int]:
    """The demo setup (or a tiny one), the canary candidates and the attack steps."""
    if not quick:
        return (
            RunConfig(federation=FederationConfig(rounds=rounds), corpus=CorpusConfig(canary_client=VICTIM)),
            1000,
            100,
        )
    config = replace(QUICK_EFFICACY, evaluation=EvaluationConfig(every=1))  # every step, tiny
    return config, 50, 5


def bench_policy(policy: str, base: RunConfig, methods: tuple[str, ...], candidates: int, attack: int) -> dict:
    """One HyperLoRA run under ``policy`` (plus ``methods``' reference runs), then a delete."""
    config = replace(
        base, federation=replace(base.federation, **POLICIES[policy]), methods=("hyperlora", *methods), engine="loop"
    )
    victim = config.corpus.canary_client
    with tempfile.TemporaryDirectory() as tmp:
        result = run_experiment(Path(tmp) / "run", config)
        report = forget_and_verify(Path(tmp) / "run", victim, "delete", num_candidates=candidates, attack_steps=attack)
    test = {m: result.test(m) for m in config.methods}
    return {
        "policy": policy,
        "federation": {k: v for k, v in config.federation.to_dict().items() if k not in ("local", "server")},
        "guarantee": report.guarantee,
        "mean_test": {m: sum(v.values()) / len(v) for m, v in test.items()},
        "base_mean_test": sum(result.base_test.values()) / len(result.base_test),
        "selected_round": {m: result.selected_round(m) for m in config.methods},
        "test": test,
        "efficacy": efficacy_rows(report),
        "excess_removed": report.excess_removed,
        "speedup_vs_retrain": report.speedup_vs_retrain,
    }


def summary_rows(results: list[dict]) -> list[dict]:
    """One row per policy (and per reference method): utility, exposure, attacks, times."""
    ref = next((r for r in results if set(REFERENCES) <= set(r["test"])), None)
    rows = []
    for r in results:
        by = {e["system"]: e for e in r["efficacy"]}
        bits = {name: by.get(name, {}).get("exposure_bits") for name in by}
        mine = r["test"]["hyperlora"]
        local = ref["test"]["local"] if ref else {}
        removed = r["excess_removed"].get("after delete")
        rows.append(
            {
                "method": f"HyperLoRA {r['policy']}",
                "mean test": f"{r['mean_test']['hyperlora']:.4f}",
                "round": r["selected_round"]["hyperlora"],
                "beats local-only on": f"{sum(mine[c] < local[c] for c in local)}/{len(local)}" if local else "–",
                "exposure before": _bits(bits.get("before forget")),
                "after delete": _bits(bits.get("after delete")),
                "gold": _bits(bits.get("retrain (gold)")),
                "excess removed": "n/a" if removed is None else f"{removed:.0%}",
                "attack delete / gold": _pair(bits, "attack on delete", "attack on retrain"),
                "strong attack delete / gold": _pair(bits, "strong attack on delete", "strong attack on retrain"),
                "forget s": _bits(by.get("after delete", {}).get("seconds")),
                "retrain s": _bits(by.get("retrain (gold)", {}).get("seconds")),
                "guarantee": _guarantee(r["guarantee"]),
            }
        )
    if ref:
        for method in REFERENCES:
            rows.append(
                {
                    "method": method_label(method),
                    "mean test": f"{ref['mean_test'][method]:.4f}",
                    "round": ref["selected_round"][method],
                }
            )
        rows.append({"method": "base model", "mean test": f"{ref['base_mean_test']:.4f}", "round": 0})
    return rows


def _bits(value: object) -> str:
    """Two decimals (bits or seconds), ``–`` where there is no number."""
    return f"{value:.2f}" if isinstance(value, int | float) else "–"


def _pair(bits: dict, first: str, second: str) -> str:
    a, b = bits.get(first), bits.get(second)
    return "–" if a is None or b is None else f"{a:.2f} / {b:.2f}"


def _guarantee(stated: dict) -> str:
    if stated.get("guarantee") == "(ε, δ)-DP":
        return f"(ε = {stated['epsilon']:.3g}, δ = {stated['delta']:g})"
    return str(stated.get("guarantee", "–"))


def frontier(results: list[dict]) -> list[dict]:
    """Every policy's before / delete / gold points; the base model once."""
    points = []
    for n, r in enumerate(results):
        for p in frontier_points(r["efficacy"], prefix=f"{r['policy']} "):
            if p["system"].endswith(" base"):
                if n:
                    continue
                p = p | {"system": "base"}  # the same base model under every policy
            points.append(p)
    return points


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policies", default=",".join(POLICIES), help="comma-separated, from " + ",".join(POLICIES))
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="tiny settings (a smoke test, not a measurement)")
    parser.add_argument("--out", default="bench/results/shared_policies.json")
    args = parser.parse_args(argv)
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    unknown = sorted(set(policies) - set(POLICIES))
    if unknown or not policies:
        parser.error(f"--policies must come from {', '.join(POLICIES)}; got {args.policies!r}")
    base, candidates, attack = base_config(args.rounds, args.quick)
    results = [
        bench_policy(policy, base, REFERENCES if n == 0 else (), candidates, attack)
        for n, policy in enumerate(policies)
    ]
    out: dict[str, Any] = {
        "machine": machine_info(),
        "setup": {"rounds": base.federation.rounds, "local_steps": base.federation.local.steps, "seed": 0}
        | {"engine": "loop", "victim": base.corpus.canary_client, "corpus": repr(base.corpus), "quick": args.quick},
        "policies": results,
        "summary": summary_rows(results),
        "frontier": frontier(results),
    }
    print(format_table(out["summary"], title="Shared-weight policies: test loss at the selected round, delete vs gold"))
    path = write_result(args.out, out)
    png = plot_frontier(
        out["frontier"], path.with_suffix(".png"), f"Forgetting {base.corpus.canary_client}: every policy"
    )
    print(f"wrote {png}")
    return out


if __name__ == "__main__":
    main()
