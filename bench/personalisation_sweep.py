"""Sweep personalisation over data per client and heterogeneity, with the reviewer's protocol.

Run:  python bench/personalisation_sweep.py [--out bench/results/personalisation_sweep.json]
                                            [--quick] [--cells 0 1 …] [--seeds 0 1 2] [--report]
                                            [--public-share 0.5 --public-pretrain-rounds 30]

Cells: data per client (4 / 16 / 64 KiB of train text) × heterogeneity — one domain (code:
three standard-library packages cut into three clients each) against three (code, docs,
legal: three clients each). The licences are 22–34 KiB long, so at 64 KiB the mixed cell
is code + docs (four clients each). Every cell runs every method of the registry over the
seeds with the protocol of ``bench/personalisation.py`` (early stopping on validation,
reported on test, same client budget) at one stated setting per method — the learning
rates that benchmark chose on validation — instead of the whole grid, so that the 6 cells ×
5 methods × 3 seeds fit in about an hour on two cores.

Each cell is saved to ``<out stem>/<cell>.json`` as soon as it is done, so cells can run in
separate processes (``--cells 0 2 4`` and ``--cells 1 3 5``) and a cut-off sweep keeps its
cells; ``--report`` (also run after the cells) merges what is there into the summary JSON
and draws ``<out stem>.png``.

With ``--public-pretrain-rounds N`` HyperLoRA's hypernetwork is first pretrained on public
pseudo-clients (``--public-share``: the share of the pretraining text withheld from the base
model for them), and every method runs at :data:`~bench.personalisation.CHOSEN_PUBLIC`,
the setting the grid chose on validation in that setup.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.personalisation import CHOSEN, CHOSEN_PUBLIC, base_config, budget, run_setting  # noqa: E402
from bench.results_io import machine_info, write_result  # noqa: E402
from hyperfed.config import EvaluationConfig, RunConfig  # noqa: E402
from hyperfed.experiment import SELECTION_RULE  # noqa: E402
from hyperfed.federation import METHODS, method_label  # noqa: E402
from hyperfed.render import format_table  # noqa: E402

#: (name, train KiB, domains, clients per domain, shards per source)
CELLS: tuple[tuple[str, float, tuple[str, ...], int, int], ...] = (
    ("4KiB-1domain", 4, ("code",), 3, 3),
    ("4KiB-3domains", 4, ("code", "docs", "legal"), 3, 1),
    ("16KiB-1domain", 16, ("code",), 3, 3),
    ("16KiB-3domains", 16, ("code", "docs", "legal"), 3, 1),
    ("64KiB-1domain", 64, ("code",), 3, 3),
    ("64KiB-2domains", 64, ("code", "docs"), 4, 1),
)


def cell_config(base: RunConfig, cell: tuple[str, float, tuple[str, ...], int, int], quick: bool) -> RunConfig:
    """``base`` with the cell's corpus (``quick``: a tiny one of the same shape)."""
    _, kib, domains, per_domain, shards = cell
    if quick:  # tiny text, same heterogeneity; the quick corpus's block size
        kib, per_domain, shards = 1, min(per_domain, 2), min(shards, 2)
    corpus = replace(base.corpus, train_kib=kib, domains=domains, clients_per_domain=per_domain, shards=shards)
    return replace(base, corpus=corpus)


def summary_rows(cells: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per cell: each method's mean ± std test loss and HyperLoRA's wins."""
    rows = []
    for name, cell in cells.items():
        row: dict[str, Any] = {"cell": name, "clients": len(cell["base_test"])}
        for r in cell["table"]:
            row[r["method"]] = (
                f"{r['test_mean']:.4f} ± {r['test_std']:.4f}" if r["seeds"] > 1 else f"{r['test_mean']:.4f}"
            )
        best = min((r for r in cell["table"] if r["method"] != "base model"), key=lambda r: r["test_mean"])
        row["best"] = best["method"]
        for pair in cell["pairwise"]:
            row[f"hyper beats {pair['vs']}"] = pair["hyperlora_better_on"]
        rows.append(row)
    return rows


def plot(cells: dict[str, dict[str, Any]], path: Path) -> Path:
    """Mean test loss (± std over seeds) minus the base model's, by KiB, one panel per heterogeneity."""
    from matplotlib.figure import Figure  # no pyplot: leaves the caller's backend alone

    fig = Figure(figsize=(10, 4))
    panels = {"one domain": fig.add_subplot(1, 2, 1), "mixed domains": fig.add_subplot(1, 2, 2)}
    series: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    shape = {name: (kib, len(domains)) for name, kib, domains, *_ in CELLS}
    for name, cell in cells.items():
        kib, n_domains = shape[name]
        panel = "one domain" if n_domains == 1 else "mixed domains"
        base = next(r["test_mean"] for r in cell["table"] if r["method"] == "base model")
        for r in cell["table"]:
            if r["method"] != "base model":
                series.setdefault((panel, r["method"]), []).append((kib, r["test_mean"] - base, r["test_std"]))
    for (panel, method), points in sorted(series.items()):
        points.sort()
        ax = panels[panel]
        ax.errorbar(
            [p[0] for p in points],
            [p[1] for p in points],
            yerr=[p[2] for p in points],
            marker="o",
            capsize=3,
            label=method,
        )
    for title, ax in panels.items():
        ax.set_xscale("log", base=2)
        ax.set_xlabel("train KiB per client")
        ax.set_ylabel("mean test loss − base model (nats/byte)")
        ax.set_title(title)
        ax.axhline(0, color="grey", lw=0.5)
    drawn = [ax for ax in panels.values() if ax.get_legend_handles_labels()[0]]
    drawn[-1].legend(fontsize=8)  # one legend: the methods are the same in both panels
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def chosen_grid(setup: dict[str, Any]) -> dict[str, dict[str, tuple[float, ...]]]:
    """The one setting per method a cell with this ``setup`` runs at."""
    return CHOSEN_PUBLIC if setup.get("public_pretrain_rounds", 0) > 0 else CHOSEN


def report(out: Path, cells_dir: Path, quick: bool) -> dict[str, Any]:
    """Merge every saved cell (in :data:`CELLS` order) into ``out`` and draw the plot; the
    setting reported is the one the cells ran at (public pretraining: :data:`CHOSEN_PUBLIC`)."""
    cells = {}
    for name, *_ in CELLS:
        path = cells_dir / f"{name}.json"
        if path.is_file():
            cells[name] = json.loads(path.read_text())
    if not cells:
        raise SystemExit(f"no sweep cells in {cells_dir}: run the cells first")
    rows = summary_rows(cells)
    first = next(iter(cells.values()))
    result = {
        "complete": len(cells) == len(CELLS),
        "machine": machine_info(),
        "protocol": SELECTION_RULE,
        "setting": {m: {k: list(v) for k, v in axes.items()} for m, axes in chosen_grid(first["setup"]).items()},
        "setup": first["setup"],
        "summary": rows,
        "cells": {n: {k: c[k] for k in ("setup", "table", "per_client", "pairwise")} for n, c in cells.items()},
        "plot": str(plot(cells, out.with_suffix(".png"))),
        "quick": quick,
    }
    print(format_table(rows, title="Mean test loss at each method's selected round (± std over seeds), nats/byte"))
    write_result(out, result)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "personalisation_sweep.json"))
    parser.add_argument("--quick", action="store_true", help="tiny settings: checks the pipeline, not a measurement")
    parser.add_argument("--cells", type=int, nargs="*", default=None, help=f"indices into {len(CELLS)} cells")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0 1 2 (quick: 0 1)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--report", action="store_true", help="only merge the saved cells and plot")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (two processes: 1 each)")
    parser.add_argument(
        "--policy",
        choices=["frozen", "shared"],
        default="frozen",
        help="HyperLoRA's shared weights: frozen (+ client residuals, the default) or shared (no residuals)",
    )
    parser.add_argument("--public-share", type=float, default=0.0, help="pretraining text withheld for public data")
    parser.add_argument("--public-pretrain-rounds", type=int, default=0, help="HyperLoRA's public pretraining rounds")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    cells_dir = out.with_suffix("")
    if not args.report:
        seeds = args.seeds or ([0, 1] if args.quick else [0, 1, 2])
        config = base_config(args.quick, None if args.quick else 6)
        config = replace(config, evaluation=EvaluationConfig(every=1 if args.quick else 2))
        fed = config.federation
        config = replace(
            config,
            federation=replace(
                fed,
                shared_policy=args.policy,
                client_residual=args.policy == "frozen",
                local=replace(fed.local, steps=fed.local.steps if args.quick else 5),
                public_pretrain_rounds=args.public_pretrain_rounds,
            ),
            base_model=replace(config.base_model, public_share=args.public_share),
        )
        grid = chosen_grid({"public_pretrain_rounds": args.public_pretrain_rounds})
        cells_dir.mkdir(parents=True, exist_ok=True)
        for index in range(len(CELLS)) if args.cells is None else args.cells:
            cell = CELLS[index]
            cfg = cell_config(config, cell, args.quick)
            result = run_setting(cfg, args.methods, seeds, label=f"{cell[0]:>15} ", grid=grid)
            setup = budget(cfg, len(result["base_test"])) | {
                "seeds": seeds,
                "engine": cfg.engine,
                "corpus": repr(cfg.corpus),
                "hyperlora_policy": args.policy,
                "public_share": args.public_share,
                "public_pretrain_rounds": args.public_pretrain_rounds,
                "methods": [method_label(m) for m in args.methods],
            }
            (cells_dir / f"{cell[0]}.json").write_text(json.dumps({"setup": setup, **result}, indent=1, default=str))
            print(format_table(result["table"], title=f"{cell[0]}: mean test loss at the selected round"), flush=True)
        if args.cells is not None:  # a part of the sweep: the report comes from a later --report
            return 0
    report(out, cells_dir, args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
