"""Bring your own federated text: a folder per client, a Hugging Face dataset, flwr-datasets.

Every loader returns ``{client_id: ClientData}`` (byte-level blocks; the last
``val_fraction`` of each client's text is held out), which every part of the library accepts
(``run_rounds``, ``HypernetTrainer.fit``, the servers). Hub access is never attempted here:
pass local paths or already-loaded dataset objects (``datasets`` and ``flwr-datasets`` are
optional and imported only when a name or path needs them).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from hyperfed.data.tokenizer import ByteTokenizer
from hypernet import ClientData, to_blocks
from hypernet.errors import ConfigError

__all__ = ["client_data_from_texts", "corpus_from_directory", "corpus_from_hf_dataset", "corpus_from_flwr_datasets"]


def client_data_from_texts(
    texts: Mapping[str, str], block_size: int = 128, val_fraction: float = 0.2
) -> dict[str, ClientData]:
    """Split each client's text: the first part trains, the last ``val_fraction`` validates."""
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    tok = ByteTokenizer()
    out = {}
    for client_id, text in texts.items():
        ids = tok.encode(text)
        cut = int(len(ids) * (1 - val_fraction))
        if cut < block_size or len(ids) - cut < block_size:
            raise ConfigError(
                f"client {client_id!r} has {len(ids)} bytes of text: too little for a {block_size}-byte "
                f"train and validation block at val_fraction={val_fraction}"
            )
        out[client_id] = ClientData(train=to_blocks(ids[:cut], block_size), val=to_blocks(ids[cut:], block_size))
    return out


def corpus_from_directory(
    path: str | Path, block_size: int = 128, val_fraction: float = 0.2, pattern: str = "*.txt"
) -> dict[str, ClientData]:
    """One client per entry of ``path``: a text file (its stem is the id) or a folder (its
    name is the id; its ``pattern`` files, sorted, are concatenated)."""
    root = Path(path)
    if not root.is_dir():
        raise ConfigError(f"{root} is not a directory of client texts")
    texts = {}
    for entry in sorted(root.iterdir()):
        if entry.is_dir():
            files = sorted(entry.rglob(pattern))
            if files:
                texts[entry.name] = "\n".join(f.read_text(encoding="utf-8", errors="replace") for f in files)
        elif entry.match(pattern):
            texts[entry.stem] = entry.read_text(encoding="utf-8", errors="replace")
    if not texts:
        raise ConfigError(f"no client texts matching {pattern!r} in {root}")
    return client_data_from_texts(texts, block_size, val_fraction)


def corpus_from_hf_dataset(
    dataset: Iterable[Mapping[str, Any]] | str,
    text_column: str = "text",
    client_column: str = "client_id",
    split: str = "train",
    block_size: int = 128,
    val_fraction: float = 0.2,
) -> dict[str, ClientData]:
    """Group the rows of a Hugging Face dataset by ``client_column`` into clients.

    ``dataset`` is a loaded ``datasets.Dataset`` (or any iterable of row dicts), or a local
    path that ``datasets.load_from_disk`` / ``load_dataset`` can open offline.
    """
    rows = _open_hf(dataset, split) if isinstance(dataset, str) else dataset
    texts: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        try:
            texts[str(row[client_column])].append(str(row[text_column]))
        except KeyError as exc:
            raise ConfigError(
                f"dataset rows need the columns {text_column!r} and {client_column!r}; missing {exc}"
            ) from None
    return client_data_from_texts({c: "\n".join(t) for c, t in texts.items()}, block_size, val_fraction)


def corpus_from_flwr_datasets(
    federated_dataset: Any,
    num_partitions: int,
    text_column: str = "text",
    split: str = "train",
    block_size: int = 128,
    val_fraction: float = 0.2,
) -> dict[str, ClientData]:
    """One client per partition of a ``flwr_datasets.FederatedDataset`` (ids ``partition-<i>``)."""
    texts = {}
    for i in range(num_partitions):
        partition = federated_dataset.load_partition(i, split)
        texts[f"partition-{i}"] = "\n".join(str(row[text_column]) for row in partition)
    return client_data_from_texts(texts, block_size, val_fraction)


def _open_hf(path: str, split: str) -> Iterable[Mapping[str, Any]]:
    try:
        import datasets
    except ImportError:
        raise ConfigError("loading a dataset by path needs the `datasets` package (pip install datasets)") from None
    if Path(path).is_dir() and (Path(path) / "dataset_info.json").exists():
        loaded = datasets.load_from_disk(path)
        return loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
    return datasets.load_dataset(path, split=split)
