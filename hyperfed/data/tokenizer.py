"""A byte-level tokenizer: needs no files, no training and no hub.

Token ids 0–255 are the UTF-8 bytes; ids 256+ are specials. Byte-level modelling is slower
per character than BPE but makes losses comparable across every client and source
(nats per byte).
"""

from __future__ import annotations

import torch

__all__ = ["ByteTokenizer"]


class ByteTokenizer:
    """Encode text to UTF-8 byte ids and back."""

    bos_id = 256
    eos_id = 257
    pad_id = 258
    vocab_size = 260  # 256 bytes + 3 specials, rounded to an even size

    def encode(self, text: str) -> torch.Tensor:
        return torch.frombuffer(bytearray(text.encode("utf-8")), dtype=torch.uint8).long()

    def decode(self, ids: torch.Tensor | list[int]) -> str:
        data = bytes(int(i) for i in ids if 0 <= int(i) < 256)
        return data.decode("utf-8", errors="replace")
