"""Named run presets: the real-LLM run that fits a laptop CPU.

:func:`real_llm_config` is what ``hyperfed demo --model NAME`` runs, and
``configs/smollm2.toml`` is the same run as a file (a test keeps the two equal).
"""

from __future__ import annotations

from hyperfed.base_model import BaseModelConfig
from hyperfed.config import EvaluationConfig, RunConfig
from hyperfed.data.corpus import CorpusConfig
from hyperfed.federation.config import FederationConfig
from hypernet.config import LocalTrainConfig

__all__ = ["real_llm_config", "REAL_LLM_PROMPT", "REAL_LLM_FORGET_CLIENT", "REAL_LLM_ATTACK_STEPS"]

#: The prompt every model completes after training (base vs two clients' adapters).
REAL_LLM_PROMPT = "Note that the"
#: Steps of the embedding-recovery attack in the real-LLM demo's forget report (100 for the
#: byte-level demo; each step is a forward+backward of the real model).
REAL_LLM_ATTACK_STEPS = 5
#: The client the real-LLM demo forgets.
REAL_LLM_FORGET_CLIENT = "code/email"


def real_llm_config(name: str = "smollm2-135m") -> RunConfig:
    """HyperLoRA vs the baselines on base model ``name``, budgeted for 2 CPU cores.

    LoRA r=8 on q,v of the top 2 of SmolLM2's 30 layers only, 32-token blocks, 4 clients of
    2 domains (2 KiB of train, 1 KiB of validation and 1 KiB of test text each), 3 rounds of 2 local steps
    of 2 blocks, the loop engine. One forward+backward costs seconds on a busy CPU: every
    knob here is set by that cost, not by what would converge.
    """
    return RunConfig(
        federation=FederationConfig(
            rounds=3,
            sample_rate=1.0,
            lora_rank=8,
            local=LocalTrainConfig(steps=2, batch_size=2, lr=3e-3),
            shared_policy="frozen",
            client_residual=True,
        ),
        corpus=CorpusConfig(
            domains=("code", "docs"), clients_per_domain=2, train_kib=2, val_kib=1, test_kib=1, block_size=32
        ),
        base_model=BaseModelConfig(name=name, lora_layers=2),
        evaluation=EvaluationConfig(every=3),
        methods=("hyperlora", "fedavg", "local"),
        engine="loop",
    )
