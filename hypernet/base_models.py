"""Base models: tiny ones built from configs (offline, for tests and demos) and real ones by path.

No function here touches the Hugging Face hub unless the caller passes a hub name and the
hub is reachable; with ``HF_HUB_OFFLINE=1`` only local paths load.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["tiny_llama", "tiny_gpt2", "tiny_qwen2", "add_lora", "load_causal_lm", "DEFAULT_TARGETS", "LORA_LAYERS_ATTR"]

#: The model-config attribute a loader sets to give :func:`add_lora` its default layers.
LORA_LAYERS_ATTR = "lora_layers_to_transform"

# Which linear layers get LoRA by default, per model family (peft's naming).
DEFAULT_TARGETS: dict[str, list[str]] = {
    "llama": ["q_proj", "v_proj"],
    "qwen2": ["q_proj", "v_proj"],
    "mistral": ["q_proj", "v_proj"],
    "gpt2": ["c_attn"],
}


def tiny_llama(
    vocab_size: int = 260,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    max_positions: int = 512,
    seed: int = 0,
) -> nn.Module:
    """A randomly initialised Llama with grouped-query attention (k/v narrower than q)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_positions,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
        tie_word_embeddings=False,
    )
    return _seeded(lambda: LlamaForCausalLM(config), seed)


def tiny_gpt2(
    vocab_size: int = 260, hidden_size: int = 64, num_layers: int = 2, num_heads: int = 4, seed: int = 0
) -> nn.Module:
    """A randomly initialised GPT-2 (``Conv1D`` layers, fused ``c_attn``)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=vocab_size,
        n_embd=hidden_size,
        n_layer=num_layers,
        n_head=num_heads,
        n_positions=512,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=None,
        eos_token_id=None,
    )
    return _seeded(lambda: GPT2LMHeadModel(config), seed)


def tiny_qwen2(
    vocab_size: int = 260,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    seed: int = 0,
) -> nn.Module:
    """A randomly initialised Qwen2 (GQA, biased q/k/v projections)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=512,
        bos_token_id=None,
        eos_token_id=None,
        tie_word_embeddings=False,
    )
    return _seeded(lambda: Qwen2ForCausalLM(config), seed)


def add_lora(
    model: nn.Module,
    rank: int = 8,
    target_modules: Sequence[str] | str | None = None,
    alpha: int | None = None,
    seed: int = 0,
    layers_to_transform: Sequence[int] | None = None,
) -> nn.Module:
    """Wrap ``model`` with a peft LoRA adapter named ``default`` (dropout 0).

    ``layers_to_transform`` limits LoRA to those transformer layers (peft's option); by
    default it is the model config's ``lora_layers_to_transform`` attribute where the loader
    set one (:data:`LORA_LAYERS_ATTR`), so every copy of a base model gets the same targets,
    else every layer.
    """
    from peft import LoraConfig, get_peft_model

    hf_model: Any = model  # a transformers PreTrainedModel (its config is untyped)
    model_type: str = hf_model.config.model_type
    targets: Sequence[str] | str = (
        DEFAULT_TARGETS.get(model_type, "all-linear") if target_modules is None else target_modules
    )
    layers = layers_to_transform
    if layers is None:
        layers = getattr(hf_model.config, LORA_LAYERS_ATTR, None)
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha if alpha is not None else 2 * rank,
        target_modules=targets if isinstance(targets, str) else list(targets),
        lora_dropout=0.0,
        fan_in_fan_out=model_type == "gpt2",
        layers_to_transform=list(layers) if layers else None,
    )
    return _seeded(lambda: get_peft_model(model, config), seed)


def load_causal_lm(name_or_path: str, dtype: torch.dtype = torch.float32) -> nn.Module:
    """Load a real causal LM (a local directory, or a hub name when the hub is reachable)."""
    from transformers import AutoModelForCausalLM

    model: nn.Module = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype)
    return model


def _seeded(build: Callable[[], Any], seed: int) -> nn.Module:
    """``build()`` with the global torch RNG seeded, leaving the caller's RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model: nn.Module = build()
    return model
