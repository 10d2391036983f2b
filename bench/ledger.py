"""Ledger benchmark: what accountability costs per transaction and per federated round.

Embedded ledger (default backend): durable transactions per second (every commit is an
fsync'd SQLite transaction with a hash-chained block) for ``register_client`` and
``record_generation``, query rate, the ledger cost of one federated round
(``k`` generations + one checkpoint whose Merkle root the contract computes over ``k``
commitments), and ``verify()`` time per 1,000 blocks. The Fabric Gateway client on
loopback is measured by :func:`bench_gateway`. :func:`bench_recorder` measures what a
real run pays per round through :class:`~hyperfed.rundir.recorder.RunRecorder` (files,
hashes, commitments, outbox and ledger) against the same file writes without a ledger,
and the audit of the resulting run.

Run from the repository root::

    python bench/ledger.py [--n 500] [--clients 10] [--rounds 20] \
        [--out bench/results/ledger.json] [--skip-gateway] [--skip-recorder]
"""

from __future__ import annotations

import argparse
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.results_io import machine_info, write_result  # noqa: E402
from hyperfed.ledger import EmbeddedLedger, Ledger, sha256_hex  # noqa: E402
from hyperfed.ledger.base import LedgerBackend  # noqa: E402

__all__ = ["measure_backend", "sqlite_baseline", "bench_embedded", "bench_gateway", "bench_recorder", "main"]


def _timed(calls: list[Callable[[], Any]]) -> list[float]:
    times = []
    for call in calls:
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def _row(backend: str, operation: str, times: list[float], unit: str = "tx") -> dict[str, Any]:
    ordered = sorted(times)
    return {
        "backend": backend,
        "operation": operation,
        "n": len(times),
        f"{unit}_per_s": len(times) / sum(times),
        "ms_p50": statistics.median(times) * 1e3,
        "ms_p95": ordered[max(0, round(0.95 * len(ordered)) - 1)] * 1e3,
    }


def measure_backend(name: str, backend: LedgerBackend, *, n: int, clients: int, rounds: int) -> list[dict[str, Any]]:
    """The same workload on any backend, through the typed :class:`Ledger` API.

    Parameters
    ----------
    name
        Label of the backend in the results.
    backend
        A fresh, initialised backend whose identity is the writer.
    n
        Registrations, generations and queries to time.
    clients, rounds
        Clients per simulated federated round, and how many rounds.
    """
    ledger = Ledger(backend)
    commitments = {f"client-{i:06d}": sha256_hex(f"c{i}".encode()) for i in range(n)}
    rows = [
        _row(
            name,
            "register_client",
            _timed([lambda c=c, v=v: ledger.register_client(c, v) for c, v in commitments.items()]),
        )
    ]
    ledger.record_checkpoint(0, sha256_hex(b"w0"), commitments)
    rows.append(
        _row(
            name,
            "record_generation",
            _timed(
                [
                    lambda c=c: ledger.record_generation(1, c, sha256_hex(c.encode()), sha256_hex(b"w0"))
                    for c in commitments
                ]
            ),
        )
    )
    rows.append(
        _row(name, "get_client (query)", _timed([lambda c=c: ledger.get_client(c) for c in commitments]), unit="query")
    )

    cohort = list(commitments)[:clients]

    def one_round(r: int) -> None:
        previous = sha256_hex(f"w{r - 1}".encode())
        for cid in cohort:
            ledger.record_generation(r, cid, sha256_hex(f"{cid}-{r}".encode()), previous)
        moved = {cid: sha256_hex(f"{cid}-embedding-{r}".encode()) for cid in cohort}
        ledger.record_checkpoint(r, sha256_hex(f"w{r}".encode()), moved)

    ledger.record_checkpoint(1, sha256_hex(b"w1"), {c: commitments[c] for c in cohort})
    times = _timed([lambda r=r: one_round(r) for r in range(2, 2 + rounds)])
    rows.append(
        {
            "backend": name,
            "operation": f"federated round ({clients} generations + 1 checkpoint)",
            "n": rounds,
            "ms_per_round": statistics.mean(times) * 1e3,
            "ms_p95": sorted(times)[max(0, round(0.95 * rounds) - 1)] * 1e3,
            "tx_per_round": clients + 1,
        }
    )
    return rows


def sqlite_baseline(workdir: Path, *, n: int) -> dict[str, Any]:
    """The disk's ceiling: one 300-byte INSERT per WAL, ``synchronous=FULL`` transaction."""
    conn = sqlite3.connect(workdir / "baseline.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v BLOB)")

    def insert(i: int) -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t VALUES (?, ?)", (str(i), bytes(300)))
        conn.execute("COMMIT")

    try:
        return _row("sqlite baseline", "one fsync'd INSERT", _timed([lambda i=i: insert(i) for i in range(n)]))
    finally:
        conn.close()


def bench_embedded(workdir: Path, *, n: int, clients: int, rounds: int) -> list[dict[str, Any]]:
    """Embedded ledger rows, plus ``verify()`` time per 1,000 blocks of that ledger.

    A bare SQLite baseline comes first: durable rates are bounded by the disk's fsync
    latency, so read the ledger's figures against it.
    """
    rows = [sqlite_baseline(workdir, n=n)]
    with EmbeddedLedger(workdir / "embedded.db") as backend:
        rows += measure_backend("embedded", backend, n=n, clients=clients, rounds=rounds)
        start = time.perf_counter()
        report = backend.verify()
        seconds = time.perf_counter() - start
    if not report.ok:
        raise RuntimeError(str(report))
    rows.append(
        {
            "backend": "embedded",
            "operation": "verify()",
            "n": report.blocks,
            "ms_per_1k_blocks": seconds * 1e3 * 1000 / report.blocks,
        }
    )
    return rows


def bench_gateway(workdir: Path, *, n: int, clients: int, rounds: int) -> list[dict[str, Any]]:
    """Fabric Gateway client rows (signed Endorse/Submit/CommitStatus on loopback).

    The gateway part lives in ``bench/ledger_gateway.py``; this adapts its result to
    this table. Returns no rows when that part is unavailable.
    """
    try:
        from ledger_gateway import run_gateway_bench  # same folder as this script
    except ImportError:
        return []
    result = run_gateway_bench(n)
    name = "gateway (loopback)"
    return [
        {
            "backend": name,
            "operation": "register_client",
            "n": n,
            "tx_per_s": result["submit_tx_per_s"],
            "ms_p50": result["submit_ms_p50"],
            "ms_p95": result["submit_ms_p95"],
        },
        {
            "backend": name,
            "operation": "get_client (query)",
            "n": n,
            "query_per_s": result["evaluate_tx_per_s"],
            "ms_p50": result["evaluate_ms_p50"],
            "ms_p95": result["evaluate_ms_p95"],
        },
    ]


def bench_recorder(workdir: Path, *, clients: int, rounds: int, **_: Any) -> list[dict[str, Any]]:
    """Ledger cost per federated round of a real run directory (embedded ledger).

    A tiny Llama (hidden 64, 2 layers, LoRA r=8 on q,v) and a HyperLoRA with ``clients``
    clients. Each round every client gets an adapter and every embedding moves (as after
    training; the training itself is not timed). Timed per round: ``record_generations``
    (adapter files + hashes + ``k`` generation records) and ``record_checkpoint``
    (checkpoint folder + shared hash + ``k`` commitments + 1 checkpoint record), against
    the same ``RunDirectory`` writes without any ledger. Then ``audit_run`` on the result.
    """
    import torch

    from hyperfed.rundir import RunDirectory
    from hyperfed.rundir.audit import audit_run
    from hyperfed.rundir.recorder import RunRecorder
    from hypernet import HyperLoRA
    from hypernet.base_models import add_lora, tiny_llama

    model = add_lora(tiny_llama(hidden_size=64, num_layers=2), rank=8)
    ids = [f"client-{i:04d}" for i in range(clients)]
    hypernet = HyperLoRA.from_peft_model(model, client_ids=ids)

    def rounds_of(record: Callable[[int, dict], None]) -> list[float]:
        times = []
        for r in range(1, rounds + 1):
            with torch.no_grad():
                adapters = hypernet.generate_many(ids)
                for cid in ids:
                    hypernet.clients.parameter(cid).add_(0.01)
            start = time.perf_counter()
            record(r, adapters)
            times.append(time.perf_counter() - start)
        return times

    bare = RunDirectory(workdir / "files-only")

    def files_only(r: int, adapters: dict) -> None:
        for cid in sorted(adapters):
            bare.save_adapter(r, cid, adapters[cid])
        bare.save_checkpoint(r, hypernet)

    baseline = rounds_of(files_only)
    run_dir = RunDirectory(workdir / "recorded")
    recorder = RunRecorder.open(run_dir)
    recorder.register_clients(ids, hypernet)
    recorder.record_checkpoint(0, hypernet)

    def recorded(r: int, adapters: dict) -> None:
        recorder.record_generations(r, adapters, checkpoint_round=r - 1)
        recorder.record_checkpoint(r, hypernet)

    timed = rounds_of(recorded)
    recorder.close()
    start = time.perf_counter()
    report = audit_run(run_dir)
    audit_s = time.perf_counter() - start
    if not report.ok:
        raise RuntimeError(f"audit of the benchmark run failed: {report.culprits()}")
    name, what = "recorder (embedded)", f"{clients} adapters + 1 ckpt"

    def row(operation: str, times: list[float]) -> dict[str, Any]:
        return {
            "backend": name,
            "operation": operation,
            "n": rounds,
            "ms_per_round": statistics.mean(times) * 1e3,
            "ms_p95": sorted(times)[max(0, round(0.95 * rounds) - 1)] * 1e3,
        }

    return [
        row(f"round, files only ({what})", baseline),
        dict(row(f"round, recorded ({what})", timed), tx_per_round=clients + 1),
        {
            "backend": name,
            "operation": f"audit_run ({clients} clients)",
            "n": rounds + 1,
            "ms_per_checkpoint": audit_s * 1e3 / (rounds + 1),
            "findings": len(report.findings),
        },
    ]


def _format(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'backend':<20} {'operation':<45} {'n':>6} {'rate / cost':>22} {'p50 ms':>8} {'p95 ms':>8}"]
    for r in rows:
        if "tx_per_s" in r:
            rate = f"{r['tx_per_s']:.0f} tx/s"
        elif "query_per_s" in r:
            rate = f"{r['query_per_s']:.0f} queries/s"
        elif "ms_per_round" in r:
            rate = f"{r['ms_per_round']:.1f} ms/round"
        elif "ms_per_checkpoint" in r:
            rate = f"{r['ms_per_checkpoint']:.1f} ms/checkpoint"
        else:
            rate = f"{r['ms_per_1k_blocks']:.1f} ms/1k blocks"
        p50 = f"{r['ms_p50']:.2f}" if "ms_p50" in r else ""
        p95 = f"{r['ms_p95']:.2f}" if "ms_p95" in r else ""
        lines.append(f"{r['backend']:<20} {r['operation']:<45} {r['n']:>6} {rate:>22} {p50:>8} {p95:>8}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=500, help="transactions per timed operation")
    parser.add_argument("--clients", type=int, default=10, help="clients per federated round")
    parser.add_argument("--rounds", type=int, default=20, help="federated rounds to time")
    parser.add_argument("--out", type=Path, default=Path("bench/results/ledger.json"))
    parser.add_argument("--skip-gateway", action="store_true")
    parser.add_argument(
        "--skip-recorder", action="store_true", help="skip the RunRecorder round (needs torch, transformers, peft)"
    )
    args = parser.parse_args(argv)
    if args.n < args.clients or args.clients < 1 or args.rounds < 1:
        parser.error("need 1 <= clients <= n and rounds >= 1")
    sizes = dict(n=args.n, clients=args.clients, rounds=args.rounds)
    with tempfile.TemporaryDirectory(prefix="hyperfed-ledger-bench-") as tmp:
        rows = bench_embedded(Path(tmp), **sizes)
        if not args.skip_gateway:
            rows += bench_gateway(Path(tmp), **sizes)
        if not args.skip_recorder:
            rows += bench_recorder(Path(tmp), **sizes)
    result = {
        "benchmark": "ledger",
        "settings": sizes,
        "rows": rows,
        "machine": machine_info(processor=platform.processor(), sqlite=sqlite3.sqlite_version),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    print(_format(rows))
    write_result(args.out, result)
    return result


if __name__ == "__main__":
    main()
