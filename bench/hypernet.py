"""Benchmark the hypernetwork: generation latency, parameter budget, training-step cost.

Run:  python bench/hypernet.py [--out bench/results/hypernet.json] [--repeats 20]

Two target specs are measured:
* ``demo``: the demo's byte-level Llama (hidden 128, 3 layers, LoRA r=8 on q,v);
* ``llama-7b-shapes``: Llama-2-7B's LoRA targets (32 layers, 4096×4096 q/v, r=8), built as
  a shape spec only — the hypernetwork never needs the 7B model itself — with chunked heads.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.results_io import machine_info, write_result  # noqa: E402
from hyperfed.render import format_table  # noqa: E402
from hypernet import ClientData, HyperLoRA, HyperLoRAConfig, HypernetTrainer, LoraTarget, TargetSpec, TrainerConfig  # noqa: E402
from hypernet.base_models import add_lora, tiny_llama  # noqa: E402
from hypernet.data import sample_batch  # noqa: E402


def demo_model():
    return add_lora(tiny_llama(vocab_size=260, hidden_size=128, num_layers=3, num_heads=4, num_kv_heads=2), rank=8)


def llama7b_spec(rank: int = 8) -> TargetSpec:
    targets = []
    for layer in range(32):
        for proj in ("q_proj", "v_proj"):
            key = f"base_model.model.model.layers.{layer}.self_attn.{proj}"
            targets.append(LoraTarget(key, layer, f"self_attn.{proj}", 4096, 4096, rank))
    return TargetSpec(tuple(targets))


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_generation(spec: TargetSpec, config: HyperLoRAConfig, repeats: int) -> list[dict]:
    hn = HyperLoRA(spec, config, client_ids=[f"client-{i}" for i in range(100)])
    rows = []
    for n in (1, 100):
        ids = hn.client_ids[:n]
        with torch.no_grad():
            seconds = median_seconds(lambda ids=ids: hn.generate_batch(ids), max(3, repeats // (10 if n == 100 else 1)))
        rows.append({"clients": n, "ms_total": seconds * 1e3, "ms_per_client": seconds * 1e3 / n})
    return rows


def bench_parameters(spec: TargetSpec, config: HyperLoRAConfig) -> list[dict]:
    shared = HyperLoRA(spec, config).num_shared_parameters()
    rows = []
    for n in (10, 100, 1000):
        hyper = shared + n * config.client_dim
        separate = n * spec.adapter_numel
        rows.append(
            {"clients": n, "hypernet_params": hyper, "separate_lora_params": separate, "ratio": separate / hyper}
        )
    return rows


def bench_step(repeats: int) -> dict:
    torch.manual_seed(0)
    blocks = torch.randint(0, 256, (64, 128))
    gen = torch.Generator().manual_seed(0)

    model = demo_model()
    lora = [p for n, p in model.named_parameters() if "lora_" in n]
    opt = torch.optim.Adam(lora, lr=1e-3)

    def peft_step():
        x = sample_batch(blocks, 8, gen)
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()

    hyper_model = demo_model()
    trainer = HypernetTrainer(
        HyperLoRA.from_peft_model(hyper_model, client_ids=["a"]),
        hyper_model,
        TrainerConfig(batch_size=8, clients_per_step=1),
    )
    data = {"a": ClientData(train=blocks, val=blocks[:4])}

    def hyper_step():
        trainer.train_step(data, ["a"])

    # Interleave the two so background load hits both alike.
    peft_times, hyper_times = [], []
    peft_step(), hyper_step()
    for _ in range(repeats):
        for fn, times in ((peft_step, peft_times), (hyper_step, hyper_times)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    peft_s, hyper_s = statistics.median(peft_times), statistics.median(hyper_times)
    return {"peft_lora_step_ms": peft_s * 1e3, "hypernet_step_ms": hyper_s * 1e3, "overhead_ratio": hyper_s / peft_s}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bench/results/hypernet.json")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)

    specs = {
        "demo": (__import__("hypernet").discover_targets(demo_model()), HyperLoRAConfig()),
        "llama-7b-shapes": (llama7b_spec(), HyperLoRAConfig(chunk_size=4096)),
    }
    result: dict = {"machine": machine_info()}
    for name, (spec, config) in specs.items():
        result[name] = {
            "adapter_params": spec.adapter_numel,
            "generation": bench_generation(spec, config, args.repeats),
            "parameters": bench_parameters(spec, config),
        }
        print(
            format_table(
                result[name]["generation"],
                title=f"\n[{name}] generation latency (adapter = {spec.adapter_numel:,} params)",
            )
        )
        print(
            format_table(result[name]["parameters"], title=f"\n[{name}] hypernetwork vs N separate LoRAs (parameters)")
        )
    result["train_step"] = bench_step(args.repeats)
    print(format_table([result["train_step"]], title="\n[demo] one training step, batch 8×128 bytes, 1 client"))
    write_result(args.out, result)
    return result


if __name__ == "__main__":
    main()
