"""Benchmark federated training: round cost and server memory of HyperLoRA vs FedAvg-LoRA.

Run:  python bench/federation.py [--out bench/results/federation.json] [--quick]

1. Round time of HyperLoRA vs FedAvg-LoRA at 8 and 64 clients, split into server time
   (generate/aggregate: what the hypernetwork adds) and client time (local LoRA steps, which
   real clients would run in parallel).
2. Server memory: bytes the server holds (weights + optimizer state) per method.

Who wins at which data size is ``bench/personalisation_sweep.py`` (the evaluation protocol,
every method, seeds).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.results_io import machine_info, write_result  # noqa: E402
from hyperfed.base_model import BaseModelConfig, load_or_build_base_model  # noqa: E402
from hyperfed.data.corpus import CorpusConfig, FederatedCorpus, build_corpus  # noqa: E402
from hyperfed.federation import FederationConfig, make_server  # noqa: E402
from hyperfed.federation.client_side import local_round  # noqa: E402
from hyperfed.federation.servers import AdapterServer, FedAvgLoRAServer, HyperLoRAServer  # noqa: E402
from hyperfed.render import format_table  # noqa: E402
from hypernet import (
    ClientData,  # noqa: E402
    LocalTrainConfig,
)
from hypernet.base_models import add_lora  # noqa: E402


def synthetic_clients(n: int, blocks: torch.Tensor, per_client: int = 16) -> dict[str, ClientData]:
    """``n`` clients with disjoint slices of real text blocks (timing needs shapes, not meaning)."""
    out = {}
    for i in range(n):
        chunk = blocks[(i * per_client) % (blocks.shape[0] - per_client) :][:per_client]
        out[f"client-{i:03d}"] = ClientData(train=chunk[:-2], val=chunk[-2:])
    return out


def tensor_bytes(tensors: Iterable[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def server_bytes(server: AdapterServer) -> int:
    if isinstance(server, HyperLoRAServer):
        state = [
            v for k, v in server.trainer.state_dict().items() if not k.startswith("trainer/")
        ]  # optimizer state only
        return tensor_bytes(server.hypernet.parameters()) + tensor_bytes(state)
    if isinstance(server, FedAvgLoRAServer):
        return tensor_bytes(server.global_adapter.values())
    return 0


def bench_rounds(
    base: torch.nn.Module, corpus: FederatedCorpus, clients_counts: Sequence[int], local_steps: int, rounds: int
) -> list[dict]:
    blocks = torch.cat([d.train for d in corpus.clients.values()])
    rows = []
    for n in clients_counts:
        clients = synthetic_clients(n, blocks)
        for method in ("hyperlora", "fedavg"):
            config = FederationConfig(
                method=method, rounds=rounds, local=LocalTrainConfig(steps=local_steps, batch_size=4)
            )
            model = add_lora(copy.deepcopy(base), rank=config.lora_rank)
            server = make_server(method, model, config)
            server.register(list(clients))
            server_s = client_s = 0.0
            for round_ in range(1, rounds + 1):
                t0 = time.perf_counter()
                sent = server.configure_round(round_, list(clients))
                t1 = time.perf_counter()
                replies = {c: local_round(model, sent[c], clients[c], config, round_, c) for c in clients}
                t2 = time.perf_counter()
                server.aggregate_round(round_, replies)
                t3 = time.perf_counter()
                server_s += (t1 - t0) + (t3 - t2)
                client_s += t2 - t1
            rows.append(
                {
                    "clients": n,
                    "method": method,
                    "server_ms_per_round": server_s / rounds * 1e3,
                    "client_ms_per_round": client_s / rounds * 1e3,
                    "client_ms_per_client": client_s / rounds / n * 1e3,
                    "server_MiB": server_bytes(server) / 2**20,
                }
            )
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bench/results/federation.json")
    parser.add_argument("--quick", action="store_true", help="tiny settings (a smoke test, not a measurement)")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)

    if args.quick:
        base_cfg = BaseModelConfig(
            hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, steps=10, batch_size=4, block_size=64
        )
        counts, rounds, steps = (4, 8), 1, 1
    else:
        base_cfg, counts, rounds, steps = BaseModelConfig(), (8, 64), 3, 2
    base = load_or_build_base_model(base_cfg)
    corpus = build_corpus(
        CorpusConfig(domains=("code",), clients_per_domain=4, train_kib=16, val_kib=2, block_size=base_cfg.block_size)
    )
    result: dict = {"machine": machine_info()}
    result["rounds"] = bench_rounds(base, corpus, counts, steps, rounds)
    print(
        format_table(
            result["rounds"], title=f"Round cost ({steps} local steps per client, batch 4×{base_cfg.block_size} bytes)"
        )
    )
    write_result(args.out, result)
    return result


if __name__ == "__main__":
    main()
