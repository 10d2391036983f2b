"""Benchmark the shared-weight policies: utility and unlearning of shared / frozen / dp.

Run:  python bench/shared_policies.py [--policies frozen,dp,shared] [--rounds 15] [--out FILE]

For each policy, the demo setup (engine ``loop``, seed 0, canaries in ``code/email``) is
trained with HyperLoRA (and local-only, once, as the reference whose delete is trivially
exact), then ``code/email`` is forgotten in delete mode and measured against the gold
standard (retrained without it): canary exposure, membership AUC, the embedding-recovery
attack, and the excess exposure removed = (before − after) / (before − gold).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hyperfed.config import RunConfig  # noqa: E402
from hyperfed.data.corpus import CorpusConfig  # noqa: E402
from hyperfed.experiment import run_experiment  # noqa: E402
from hyperfed.federation import FederationConfig  # noqa: E402
from hyperfed.federation.privacy import describe_guarantee  # noqa: E402
from hyperfed.unlearning.report import forget_and_verify  # noqa: E402

VICTIM = "code/email"
POLICIES = {
    "shared": {},
    "shared+residual": {"client_residual": True},
    "frozen": {"shared_policy": "frozen", "client_residual": True},
    "dp": {"shared_policy": "dp", "client_residual": True, "dp_noise_multiplier": 1.0, "dp_clip": 1.0},
}


def bench_policy(name: str, rounds: int, with_local: bool, candidates: int, attack: int) -> dict:
    fed = replace(FederationConfig(rounds=rounds), **POLICIES[name])
    methods = ("hyperlora", "local") if with_local else ("hyperlora",)
    config = RunConfig(federation=fed, corpus=CorpusConfig(canary_client=VICTIM), methods=methods, engine="loop")
    with tempfile.TemporaryDirectory() as tmp:
        result = run_experiment(Path(tmp) / "run", config)
        report = forget_and_verify(Path(tmp) / "run", VICTIM, "delete", num_candidates=candidates, attack_steps=attack)
    rows = {r.name: {"exposure_bits": r.exposure_bits, "mia_auc": r.mia_auc} for r in report.rows}
    out = {
        "policy": name,
        "federation": {k: v for k, v in fed.to_dict().items() if k not in ("local", "server")},
        "guarantee": describe_guarantee(fed, rounds),
        "mean_val_loss": {m: result.mean(m) for m in result.final}
        | {"base": sum(result.base.values()) / len(result.base)},
        "per_client": result.final | {"base": result.base},
        "unlearning": rows,
    }
    names = list(rows)
    before = next((rows[n]["exposure_bits"] for n in names if n.startswith("before")), None)
    after = next((rows[n]["exposure_bits"] for n in names if n.startswith("after")), None)
    gold = next((rows[n]["exposure_bits"] for n in names if "retrain" in n or "gold" in n), None)
    if None not in (before, after, gold) and before != gold:
        out["excess_removed"] = (before - after) / (before - gold)
    return out


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policies", default="frozen,dp,shared")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--candidates", type=int, default=1000)
    parser.add_argument("--attack-steps", type=int, default=100)
    parser.add_argument("--no-local", action="store_true", help="skip the local-only reference run")
    parser.add_argument("--out", default="bench/results/shared_policies.json")
    args = parser.parse_args(argv)
    results = []
    for n, name in enumerate(args.policies.split(",")):
        results.append(
            bench_policy(name, args.rounds, n == 0 and not args.no_local, args.candidates, args.attack_steps)
        )
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1, default=str))
        print(json.dumps(results[-1], indent=1, default=str), flush=True)
    return results


if __name__ == "__main__":
    main()
