"""Suite-wide settings: everything runs offline on CPU."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import torch  # noqa: E402

# Tiny models: one thread is faster than two fighting over small matmuls, and keeps
# timings stable when other work shares the machine.
torch.set_num_threads(1)
