"""The hypernetwork on its own, end to end, in about a minute on 2 CPU cores.

Four clients, each the source code of one standard-library package (byte-level text), a
tiny Llama built from a config, a HyperLoRA trained end to end with ``HypernetTrainer``;
then one client's adapter is exported as a peft folder and reloaded with
``PeftModel.from_pretrained`` to check it reproduces the in-library logits.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from hyperfed.data import ByteTokenizer, stdlib_family_text
from hypernet import (
    ClientData,
    HyperLoRA,
    HyperLoRAConfig,
    HypernetTrainer,
    TrainerConfig,
    evaluate_loss,
    export_adapter,
    functional_forward,
    save_hypernet,
    to_blocks,
)
from hypernet.base_models import add_lora, tiny_llama

__all__ = ["run_quickstart", "QUICKSTART_FAMILIES"]

log = logging.getLogger(__name__)

QUICKSTART_FAMILIES = ("json", "email", "asyncio", "xml")


def stdlib_client_data(families: Sequence[str], kib: int = 32, block_size: int = 64) -> dict[str, ClientData]:
    """One client per standard-library family: 90 % train, 10 % validation blocks."""
    tok = ByteTokenizer()
    data = {}
    for family in families:
        blocks = to_blocks(tok.encode(stdlib_family_text(family, max_bytes=kib * 1024)), block_size)
        n_val = max(1, blocks.shape[0] // 10)
        data[family] = ClientData(train=blocks[:-n_val], val=blocks[-n_val:])
    return data


def run_quickstart(
    out_dir: str | Path,
    steps: int = 150,
    families: Sequence[str] = QUICKSTART_FAMILIES,
    seed: int = 0,
    callback: Callable[[int, dict[str, float]], None] | None = None,
) -> dict:
    """Train a HyperLoRA on ``families`` and export one adapter; return the measured results."""
    out_dir = Path(out_dir)
    torch.manual_seed(seed)
    data = stdlib_client_data(families)
    model = add_lora(tiny_llama(vocab_size=ByteTokenizer.vocab_size, hidden_size=64, num_layers=2, seed=seed), rank=8)
    hypernet = HyperLoRA.from_peft_model(model, HyperLoRAConfig(seed=seed), client_ids=list(data))
    trainer = HypernetTrainer(
        hypernet, model, TrainerConfig(lr=3e-3, batch_size=8, clients_per_step=len(data), seed=seed)
    )
    log.info("hypernetwork: %d shared parameters, %d targets", hypernet.num_shared_parameters(), len(hypernet.spec))
    history = trainer.fit(data, steps=steps, callback=callback)

    with torch.no_grad():
        adapters = hypernet.generate_many(list(data))
    ids = list(data)
    rows = []
    for i, cid in enumerate(ids):
        other = ids[(i + 1) % len(ids)]
        rows.append(
            {
                "client": cid,
                "base": evaluate_loss(model, None, data[cid].val),
                "own_adapter": evaluate_loss(model, adapters[cid], data[cid].val),
                "other_adapter": evaluate_loss(model, adapters[other], data[cid].val),
            }
        )

    export_dir = out_dir / "adapters" / ids[0]
    digest = export_adapter(hypernet, ids[0], export_dir)
    from peft import PeftModel

    x = data[ids[0]].val[:2]
    with torch.no_grad():
        reloaded = PeftModel.from_pretrained(copy.deepcopy(model).unload(), export_dir).eval()
        max_diff = float(
            (reloaded(input_ids=x).logits - functional_forward(model, adapters[ids[0]], input_ids=x).logits).abs().max()
        )
    save_hypernet(hypernet, out_dir / "hypernet", extra={"steps": steps})
    return {
        "rows": rows,
        "history": history,
        "export": {"client": ids[0], "path": str(export_dir), "adapter_sha256": digest, "max_logit_diff": max_diff},
        "shared_parameters": hypernet.num_shared_parameters(),
        "checkpoint": str(out_dir / "hypernet"),
    }
