"""Suite-wide settings: everything runs offline on CPU."""

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
# Tests build tiny base models; never read or fill the user's cache (~/.cache/hyperfed).
os.environ.setdefault("HYPERFED_CACHE", tempfile.mkdtemp(prefix="hyperfed-test-cache-"))
# ...nor the user's ledger identities (~/.config/hyperfed): a dev writer key per test session.
os.environ.setdefault("HYPERFED_HOME", tempfile.mkdtemp(prefix="hyperfed-test-home-"))

import torch  # noqa: E402

# Tiny models: one thread is faster than two fighting over small matmuls, and keeps
# timings stable when other work shares the machine.
torch.set_num_threads(1)
