"""Personalisation made visible: one prompt completed by the base model and by clients'
exported adapters, each loaded the way a user would (plain ``PeftModel.from_pretrained``).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from hyperfed.pretrained import HFTokenizer
from hypernet.generators import Generator
from hypernet.io import export_adapter

__all__ = ["Completion", "complete", "prompt_completions"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Completion:
    """Who completed the prompt (``"base model"`` or a client id), the adapter folder used
    (``None`` for the base model) and the generated continuation (prompt excluded)."""

    source: str
    adapter_path: str | None
    text: str


@torch.no_grad()
def complete(model: nn.Module, tokenizer: HFTokenizer, prompt: str, max_new_tokens: int = 40) -> str:
    """Greedy continuation of ``prompt`` by ``model`` (deterministic; the prompt is not repeated)."""
    hf: object = model
    ids = tokenizer.encode(prompt).unsqueeze(0)
    out = hf.generate(  # type: ignore[attr-defined]  # transformers' GenerationMixin
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=tokenizer.tokenizer.eos_token_id,
    )
    return tokenizer.decode(out[0, ids.shape[1] :])


def prompt_completions(
    base_model: nn.Module,
    tokenizer: HFTokenizer,
    hypernet: Generator,
    client_ids: Sequence[str],
    prompt: str,
    export_dir: str | Path,
    max_new_tokens: int = 40,
) -> list[Completion]:
    """``prompt`` completed by ``base_model`` and by each client's exported adapter.

    Each client's adapter is written with :func:`~hypernet.io.export_adapter` to
    ``export_dir/<client>`` and loaded with ``PeftModel.from_pretrained`` on a fresh copy of
    the plain base model: exactly what a user of the exported folder runs.
    """
    from peft import PeftModel

    rows = [Completion("base model", None, complete(base_model, tokenizer, prompt, max_new_tokens))]
    for cid in client_ids:
        path = Path(export_dir) / cid.replace("/", "__")
        export_adapter(hypernet, cid, path)
        model = PeftModel.from_pretrained(copy.deepcopy(base_model), str(path)).eval()
        rows.append(Completion(cid, str(path), complete(model, tokenizer, prompt, max_new_tokens)))
        log.info("%s completed the prompt with its exported adapter %s", cid, path)
    return rows
