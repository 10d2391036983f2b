"""Offline federated text: where client text comes from, how it is tokenised and split."""

from hyperfed.data.sources import license_text, pydoc_topics_text, stdlib_family_text
from hyperfed.data.tokenizer import ByteTokenizer

__all__ = ["ByteTokenizer", "stdlib_family_text", "license_text", "pydoc_topics_text"]
