"""The offline federated corpus: clients from domains that really differ.

Three domains, each with several clients and with text that *no* client owns reserved for
pretraining the base model:

=========  ============================================  ==================================
domain     clients                                        pretraining text
=========  ============================================  ==================================
code       one standard-library package each              other standard-library packages
docs       a fifth of Python's reference docs each        the remaining fifth
legal      one licence text each (Debian's                other licences (no other version of
           /usr/share/common-licenses; skipped if absent)  a client's licence: they share text)
=========  ============================================  ==================================

Clients of one domain share style (so a hypernetwork can share what they have in common),
clients of different domains differ sharply (so one shared FedAvg adapter fits nobody
well). Everything is read from files every Python install (and every Debian system) has,
in sorted order, so the corpus is identical on every machine with the same Python; its
manifest records a sha256 per client so a run can prove which data it used.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from hyperfed.data.canaries import make_canaries, plant_canaries
from hyperfed.data.sources import LICENSES_DIR, license_text, pydoc_topics_text, stdlib_family_text
from hyperfed.data.tokenizer import ByteTokenizer
from hyperfed.pretrained import HFTokenizer, load_tokenizer, tokens_per_byte
from hypernet import ClientData, to_blocks
from hypernet.errors import ConfigError

__all__ = [
    "CorpusConfig",
    "FederatedCorpus",
    "build_corpus",
    "split_ranges",
    "corpus_canaries",
    "pretraining_text",
    "public_clients",
    "PUBLIC_PREFIX",
    "DOMAINS",
]

# domain → (client sources, pretraining sources); each source is (name, text loader).
_Source = tuple[str, Callable[[], str]]


def _code(families: list[str]) -> list[_Source]:
    return [(f, lambda f=f: stdlib_family_text(f, max_bytes=400_000)) for f in families]


def _docs_part(index: int, parts: int) -> str:
    """Part ``index`` of Python's reference docs cut into ``parts`` equal runs of text."""
    text = pydoc_topics_text(0, None)
    size = len(text) // parts
    return text[index * size : (index + 1) * size]


def _docs(indices: list[int], parts: int = 5) -> list[_Source]:
    return [(f"reference-{i + 1}of{parts}", lambda i=i: _docs_part(i, parts)) for i in indices]


def _legal(names: list[str]) -> list[_Source]:
    return [(n, lambda n=n: license_text(n)) for n in names if (LICENSES_DIR / n).is_file()]


DOMAINS: dict[str, tuple[list[_Source], list[_Source]]] = {
    "code": (
        _code(["asyncio", "email", "xml", "unittest"]),
        _code(
            [
                "json",
                "http",
                "logging",
                "urllib",
                "concurrent",
                "importlib",
                "html",
                "xmlrpc",
                "wsgiref",
                "sqlite3",
                "zoneinfo",
                "tomllib",
            ]
        ),
    ),
    # the reference docs cut into five runs (~73 KiB each): four clients, one for pretraining
    "docs": (_docs([0, 1, 2, 3]), _docs([4])),
    "legal": (
        _legal(["GPL-3", "GFDL-1.3", "LGPL-2.1", "MPL-1.1"]),
        _legal(["Apache-2.0", "MPL-2.0", "Artistic", "BSD", "CC0-1.0"]),
    ),
}


@dataclass(frozen=True)
class CorpusConfig:
    """Which clients and how much of their text.

    Attributes
    ----------
    domains: domains to draw clients from (see :data:`DOMAINS`).
    clients_per_domain: sources taken from each domain (at most 4).
    shards: clients cut from each source (many clients with little data each, e.g. for the
        ``dp`` policy): shard k takes the k-th run of ``train_kib + val_kib + test_kib`` KiB
        counted from the end of the source and is split like a whole client; ids are
        ``<domain>/<source>.<k>`` (1-based, zero-padded). ``1``: one client per source,
        id ``<domain>/<source>``.
    train_kib, val_kib, test_kib: KiB of train, validation and test text per client. The
        test text is the very end of the source, validation comes just before it and train
        before that, so the three never share a byte. Validation selects (early-stopping
        round, learning rates); test is only reported. ``test_kib = 0``: no test split.
        The defaults (16 + 3 + 3 KiB) fit the shortest client source, GFDL-1.3 (22.4 KiB).
    block_size: bytes per training block.
    canary_client: if set, secret canaries are planted in this client's train text (to
        measure memorisation and unlearning; see :mod:`hyperfed.data.canaries`).
    canary_count, canary_copies, canary_seed: how many canaries, copies of each, and the
        seed they are generated and placed from (DESIGN §8: a real dose is needed).
    tokenizer: ``""`` = bytes (:class:`ByteTokenizer`); else a base-model name whose own
        tokenizer cuts the text into ``block_size``-token blocks (:mod:`hyperfed.pretrained`;
        :class:`~hyperfed.config.RunConfig` sets it from ``base_model.name``).
    public_share: that share of each pretraining source (from its end) is withheld from the
        base model's pretraining text and is all the public pseudo-clients are cut from
        (:func:`public_clients`): public text the base model has not seen.
        :class:`~hyperfed.config.RunConfig` sets it from ``base_model.public_share``.
    """

    domains: tuple[str, ...] = ("code", "docs", "legal")
    clients_per_domain: int = 3
    shards: int = 1
    train_kib: float = 16
    val_kib: float = 3
    test_kib: float = 3
    block_size: int = 128
    canary_client: str = ""
    canary_count: int = 5
    canary_copies: int = 20
    canary_seed: int = 1234
    tokenizer: str = ""
    public_share: float = 0.0

    def __post_init__(self) -> None:
        unknown = sorted(set(self.domains) - set(DOMAINS))
        if unknown:
            raise ConfigError(f"CorpusConfig.domains: unknown {unknown}; choose from {sorted(DOMAINS)}")
        if not 1 <= self.clients_per_domain <= 4:
            raise ConfigError(f"CorpusConfig.clients_per_domain must be 1..4, got {self.clients_per_domain}")
        if not 0.0 <= self.public_share < 1.0:
            raise ConfigError(f"CorpusConfig.public_share must be in [0, 1), got {self.public_share!r}")
        if isinstance(self.shards, bool) or not (isinstance(self.shards, int) and self.shards >= 1):
            raise ConfigError(f"CorpusConfig.shards must be an int >= 1, got {self.shards!r}")
        if not (self.train_kib > 0 and self.val_kib > 0 and self.test_kib >= 0 and self.block_size > 1):
            raise ConfigError(
                f"CorpusConfig needs train_kib, val_kib > 0, test_kib >= 0 and block_size > 1, got {self}"
            )
        if self.canary_client and (self.canary_count <= 0 or self.canary_copies <= 0):
            raise ConfigError(f"CorpusConfig.canary_count and canary_copies must be > 0, got {self}")


@dataclass
class FederatedCorpus:
    """Per-client train/val/test blocks, each client's domain, and the pretraining text."""

    clients: dict[str, ClientData]
    domain_of: dict[str, str]
    pretrain_text: str
    manifest: dict[str, str] = field(default_factory=dict)  # client id → sha256 of its text
    # client id → tokens per byte of its scored validation text (multiply a token loss by it
    # for nats/byte); empty for the byte tokenizer, whose factor is exactly 1
    tokens_per_byte: dict[str, float] = field(default_factory=dict)
    test_tokens_per_byte: dict[str, float] = field(default_factory=dict)  # the same for its test text

    def nats_per_byte(self, client_id: str, token_loss: float, split: str = "val") -> float:
        """A mean next-token loss of ``client_id`` on its ``split`` (``"val"``/``"test"``) in nats per byte."""
        factors = self.test_tokens_per_byte if split == "test" else self.tokens_per_byte
        return token_loss * factors.get(client_id, 1.0)

    @property
    def client_ids(self) -> list[str]:
        return list(self.clients)


def build_corpus(config: CorpusConfig = CorpusConfig()) -> FederatedCorpus:
    """Build the corpus deterministically from local files.

    Raises :class:`ConfigError` if a client's source is shorter than
    ``train_kib + val_kib + test_kib`` (choose less data per client).
    """
    tok: ByteTokenizer | HFTokenizer = load_tokenizer(config.tokenizer) if config.tokenizer else ByteTokenizer()
    ranges = split_ranges(config)
    total = sum(stop - start for start, stop in ranges.values())
    clients: dict[str, ClientData] = {}
    domain_of: dict[str, str] = {}
    manifest: dict[str, str] = {}
    factors: dict[str, float] = {}
    test_factors: dict[str, float] = {}
    for domain in config.domains:
        client_sources, pretrain_sources = DOMAINS[domain]
        for name, load in client_sources[: config.clients_per_domain]:
            raw = load().encode("utf-8")
            if len(raw) < total * config.shards:
                raise ConfigError(
                    f"{domain}/{name} has {len(raw) // 1024} KiB of text, fewer than the "
                    f"{config.shards} × {config.train_kib + config.val_kib + config.test_kib} KiB asked for; "
                    "lower train_kib/val_kib/test_kib or shards"
                )
            for shard in range(config.shards):
                end = len(raw) - shard * total
                parts = {split: raw[end + start : end + stop] for split, (start, stop) in ranges.items()}
                cid = _client_id(domain, name, shard, config.shards)
                clients[cid] = ClientData(
                    **{
                        split: to_blocks(tok.encode(part.decode("utf-8", "replace")), config.block_size)
                        for split, part in parts.items()
                    }
                )
                domain_of[cid] = domain
                if isinstance(tok, HFTokenizer):
                    factors[cid] = tokens_per_byte(clients[cid].val, tok)
                    if clients[cid].test is not None:
                        test_factors[cid] = tokens_per_byte(clients[cid].test, tok)
                manifest[cid] = hashlib.sha256(b"\x00".join(parts.values())).hexdigest()
    if not clients:
        raise ConfigError("the corpus has no clients: none of the chosen domains' sources exist here")
    if config.canary_client:
        _plant(clients, config, tok)
    pretrain = pretraining_text(config.domains, config.public_share)
    return FederatedCorpus(clients, domain_of, pretrain, manifest, factors, test_factors)


def _client_id(domain: str, source: str, shard: int, shards: int) -> str:
    """``<domain>/<source>``, or ``<domain>/<source>.<k>`` for shard k (1-based) of several."""
    return f"{domain}/{source}" if shards == 1 else f"{domain}/{source}.{shard + 1:0{len(str(shards))}d}"


def split_ranges(config: CorpusConfig) -> dict[str, tuple[int, int]]:
    """Byte range of each split, counted from the end of a client's source (``-n``: n bytes
    before the end; stop ``0``: the very end): ``test`` last, ``val`` before it, ``train``
    before that. The ranges are disjoint by construction; a test checks it."""
    train, val, test = (int(kib * 1024) for kib in (config.train_kib, config.val_kib, config.test_kib))
    ranges = {"train": (-(test + val + train), -(test + val)), "val": (-(test + val), -test)}
    if test:
        ranges["test"] = (-test, 0)
    return ranges


def corpus_canaries(config: CorpusConfig) -> list:
    """The canaries planted by ``config`` (empty if none), regenerated from its seed."""
    return make_canaries(config.canary_count, config.canary_seed) if config.canary_client else []


def _plant(clients: dict[str, ClientData], config: CorpusConfig, tokenizer: ByteTokenizer | HFTokenizer) -> None:
    if config.canary_client not in clients:
        raise ConfigError(f"CorpusConfig.canary_client {config.canary_client!r} is not a client: {sorted(clients)}")
    target = clients[config.canary_client]
    clients[config.canary_client] = plant_canaries(
        target, corpus_canaries(config), config.canary_copies, config.canary_seed, tokenizer
    )


@functools.lru_cache(maxsize=8)
def pretraining_text(domains: tuple[str, ...] = tuple(DOMAINS), public_share: float = 0.0) -> str:
    """The text reserved for pretraining in ``domains`` (no client's text is in it), each
    source without its last ``public_share`` (kept for the public pseudo-clients of
    :func:`public_clients`, which the base model then has not seen).

    Cached: it is read from disk once per process however many corpora and base models
    ask for it.
    """
    return "\n".join(_split_public(load(), public_share)[0] for domain in domains for _, load in DOMAINS[domain][1])


def _split_public(text: str, public_share: float) -> tuple[str, str]:
    """``text`` cut into (for the base model, public only): the last ``public_share`` is public."""
    cut = len(text) - int(len(text) * public_share)
    return text[:cut], text[cut:]


#: Id prefix of the public pseudo-clients (:func:`public_clients`); no real client id has it.
PUBLIC_PREFIX = "public/"


def public_clients(config: CorpusConfig = CorpusConfig(), train_kib: float | None = None) -> dict[str, ClientData]:
    """One *public pseudo-client* per pretraining source of ``config.domains``: text no
    client owns, cut like a client's (same tokenizer and block size), for pretraining the
    hypernetwork's shared weights on public data only.

    Each takes the last ``train_kib + val_kib`` KiB of its source (validation last, no test
    split; ``train_kib`` defaults to a client's, ``config.train_kib``; ``math.inf``: all of
    the source before its validation text — with ``config.public_share``, of the source's
    withheld end only); a shorter source is split in the same train :
    val proportion. A block whose
    text also occurs anywhere in a client's source (a repeated sentence of the reference
    docs, a licence's boilerplate) is dropped, and so is a source left without a block in
    each split. Ids are ``public/<domain>/<source>``; the result is the same on every call
    and every machine with the same files.
    """
    tok: ByteTokenizer | HFTokenizer = load_tokenizer(config.tokenizer) if config.tokenizer else ByteTokenizer()
    train_kib = config.train_kib if train_kib is None else train_kib
    val = int(config.val_kib * 1024)
    train = int(min(train_kib * 1024, 2**40))  # inf: every byte there is
    owned = b"\x00".join(
        load().encode("utf-8") for d in config.domains for _, load in DOMAINS[d][0][: config.clients_per_domain]
    )
    out: dict[str, ClientData] = {}
    for domain in config.domains:
        for name, load in DOMAINS[domain][1]:
            raw = (_split_public(load(), config.public_share)[1] if config.public_share else load()).encode("utf-8")
            size = min(len(raw), train + val)
            whole = size == train + val or math.isinf(train_kib)  # else a short source: the same proportion
            n_val = min(size, val) if whole else max(1, size * val // (train + val))
            parts = (raw[len(raw) - size : len(raw) - n_val], raw[len(raw) - n_val :])
            splits = [_public_blocks(tok, part, config.block_size, owned) for part in parts]
            if all(len(blocks) for blocks in splits):  # else nothing to learn from or select on
                out[f"{PUBLIC_PREFIX}{domain}/{name}"] = ClientData(*(torch.stack(b) for b in splits))
    return out


def _public_blocks(
    tokenizer: ByteTokenizer | HFTokenizer, raw: bytes, block_size: int, owned: bytes
) -> list[torch.Tensor]:
    """``raw`` cut into blocks, without any block whose bytes occur in ``owned``."""
    ids = tokenizer.encode(raw.decode("utf-8", "replace")) if raw else []
    if len(ids) < block_size:
        return []
    blocks = to_blocks(ids, block_size)
    if isinstance(tokenizer, ByteTokenizer):
        return [b for b in blocks if bytes(b.tolist()) not in owned]
    return [b for b in blocks if tokenizer.decode(b.tolist()).encode("utf-8") not in owned]


def pretrain_blocks(text: str, block_size: int) -> torch.Tensor:
    """Pretraining text as ``(n_blocks, block_size)`` byte blocks."""
    return to_blocks(ByteTokenizer().encode(text), block_size)
