"""The ``hyperfed`` command line. Library code logs; this module renders."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from hyperfed.render import format_table, progress

__all__ = ["main"]


def _cmd_quickstart(args: argparse.Namespace) -> int:
    from hyperfed.quickstart import run_quickstart

    with progress(args.steps, "training HyperLoRA") as bar:
        result = run_quickstart(args.out, steps=args.steps, callback=lambda step, row: (bar.update(1), bar.set_postfix(loss=f"{row['loss']:.3f}")))
    print(format_table(result["rows"], title="Validation loss (nats/byte) per client: base model vs its own vs another client's adapter"))
    exp = result["export"]
    print(
        f"\nExported {exp['client']}'s adapter to {exp['path']} (sha256 {exp['adapter_sha256'][:16]}…); "
        f"PeftModel.from_pretrained reproduces the in-library logits to {exp['max_logit_diff']:.2e}."
    )
    print(f"Hypernetwork checkpoint: {result['checkpoint']} ({result['shared_parameters']:,} shared parameters)")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "quickstart.json").write_text(json.dumps({k: v for k, v in result.items() if k != "history"}, indent=1))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hyperfed", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    quick = sub.add_parser("quickstart", help="train a HyperLoRA end to end on 4 clients and export an adapter")
    quick.add_argument("--out", default="runs/quickstart", help="output directory")
    quick.add_argument("--steps", type=int, default=150)
    quick.set_defaults(func=_cmd_quickstart)

    demo = sub.add_parser("demo", help="the main example (currently: the hypernetwork quickstart)")
    demo.add_argument("--out", default="runs/demo", help="output directory")
    demo.add_argument("--steps", type=int, default=150)
    demo.set_defaults(func=_cmd_quickstart)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
