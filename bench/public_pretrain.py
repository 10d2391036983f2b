"""Benchmark public pretraining of the hypernetwork under the frozen policy.

Run:  python bench/public_pretrain.py [--variants frozen,frozen+pt10,shared,local,fedavg_ft]
                                      [--out bench/results/public_pretrain.json]

The default RunConfig (9 clients, 15 rounds), engine ``loop``, seed 0. Every variant is one
``run_experiment`` (HyperLoRA variants: ``federation.public_pretrain_rounds``; the
hyperlora run's seconds include the pretraining), reported the experiment's way: test loss
at the round with the lowest mean validation loss.
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
from hyperfed.experiment import run_experiment  # noqa: E402

FROZEN = {"shared_policy": "frozen", "client_residual": True}
VARIANTS = {
    "frozen": ("hyperlora", FROZEN),
    "frozen+pt10": ("hyperlora", FROZEN | {"public_pretrain_rounds": 10}),
    "frozen+pt30": ("hyperlora", FROZEN | {"public_pretrain_rounds": 30}),
    "shared": ("hyperlora", {}),
    "local": ("local", {}),
    "fedavg_ft": ("fedavg_ft", {}),
}


def bench_variant(name: str) -> dict:
    method, overrides = VARIANTS[name]
    base = RunConfig()
    config = replace(base, federation=replace(base.federation, **overrides), methods=(method,), engine="loop")
    with tempfile.TemporaryDirectory() as tmp:
        run_experiment(Path(tmp) / "run", config)
        metrics = json.loads((Path(tmp) / "run" / "metrics.json").read_text())
    return {
        "variant": name,
        "federation": overrides,
        "seconds": metrics["seconds"][method],
        "selected_round": metrics["selected_round"][method],
        "mean_test": metrics["mean_test"][method],
        "test": metrics["test"][method],
        "base_mean_test": metrics["mean_test"]["base"],
    }


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="frozen,frozen+pt10,shared,local,fedavg_ft")
    parser.add_argument("--out", default="bench/results/public_pretrain.json")
    args = parser.parse_args(argv)
    results = []
    for name in args.variants.split(","):
        results.append(bench_variant(name))
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1))
        print(json.dumps(results[-1]), flush=True)
    return results


if __name__ == "__main__":
    main()
