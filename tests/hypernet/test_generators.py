import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import hypernet
from hypernet import (
    GENERATORS,
    CheckpointMismatchError,
    ConfigError,
    HyperLoRA,
    embedding_tensor_names,
    generator_class,
    load_hypernet,
    save_hypernet,
)
from hypernet.io import HYPERNET_META, HYPERNET_WEIGHTS


def _moved(model, ids=("a", "org/b", "ç.d")):
    hn = HyperLoRA.from_peft_model(model, client_ids=list(ids))
    with torch.no_grad():
        for p in hn.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return hn


def _assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def _edit_meta(folder, change):
    path = folder / HYPERNET_META
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


def test_registry_maps_the_tag_to_the_class():
    assert GENERATORS["hyperlora"] is HyperLoRA
    assert HyperLoRA.architecture == "hyperlora"
    assert generator_class("hyperlora") is HyperLoRA
    with pytest.raises(ConfigError, match="'hyperlora'"):
        generator_class("nope")


def test_checkpoint_carries_its_tag_and_round_trips(llama_model, tmp_path):
    hn = _moved(llama_model)
    save_hypernet(hn, tmp_path / "ckpt")
    assert json.loads((tmp_path / "ckpt" / HYPERNET_META).read_text())["architecture"] == "hyperlora"
    loaded = load_hypernet(tmp_path / "ckpt")
    assert type(loaded) is HyperLoRA and loaded.client_ids == hn.client_ids
    _assert_same_weights(hn, loaded)


def test_untagged_checkpoint_loads_as_legacy_hyperlora(llama_model, tmp_path):
    hn = _moved(llama_model)
    save_hypernet(hn, tmp_path / "ckpt")
    _edit_meta(tmp_path / "ckpt", lambda meta: meta.pop("architecture"))
    loaded = load_hypernet(tmp_path / "ckpt")
    assert type(loaded) is HyperLoRA
    _assert_same_weights(hn, loaded)


def test_unknown_tag_raises_naming_the_known_tags(llama_model, tmp_path):
    save_hypernet(_moved(llama_model), tmp_path / "ckpt")
    _edit_meta(tmp_path / "ckpt", lambda meta: meta.update(architecture="lora-xl"))
    with pytest.raises(CheckpointMismatchError, match=r"'lora-xl'.*known: \['hyperlora'\]"):
        load_hypernet(tmp_path / "ckpt")


def test_a_registered_generator_is_what_load_builds(llama_model, tmp_path, monkeypatch):
    class TaggedHyperLoRA(HyperLoRA):
        architecture = "hyperlora-test"

    monkeypatch.setitem(GENERATORS, TaggedHyperLoRA.architecture, TaggedHyperLoRA)
    hn = TaggedHyperLoRA.from_peft_model(llama_model, client_ids=["a"])
    save_hypernet(hn, tmp_path / "ckpt")
    loaded = load_hypernet(tmp_path / "ckpt")
    assert type(loaded) is TaggedHyperLoRA
    _assert_same_weights(hn, loaded)


def test_embedding_tensor_names_are_the_checkpoints_embedding_tensors(llama_model, tmp_path):
    hn = _moved(llama_model)
    save_hypernet(hn, tmp_path / "ckpt")
    tensors = load_file(tmp_path / "ckpt" / HYPERNET_WEIGHTS)
    saved = set(tensors)
    per_client = {cid: embedding_tensor_names(cid) for cid in hn.client_ids}
    embedding_names = {names[0] for names in per_client.values()}
    assert embedding_names <= saved
    for cid, names in per_client.items():  # the first name holds exactly that client's embedding
        assert torch.equal(tensors[names[0]], hn.client_parameter(cid).detach())
        assert not set(names[1:]) & saved  # no residual without client_residual
    shared = HyperLoRA.shared_tensor_names(hn.spec, hn.config.to_dict())
    assert shared == saved - embedding_names  # the two name sets partition the checkpoint
    assert hn.embedding_tensor_names("a") == embedding_tensor_names("a", architecture="hyperlora")
    assert embedding_tensor_names("never-registered")[0].startswith("clients.vectors.")


def test_new_public_names_are_lazy_attributes_of_hypernet():
    for name in ("Generator", "GENERATORS", "generator_class", "embedding_tensor_names"):
        assert name in hypernet.__all__ and getattr(hypernet, name) is not None


def test_importing_hypernet_and_its_errors_stays_light():
    code = (
        "import sys, hypernet\n"
        "from hypernet.errors import CheckpointMismatchError\n"
        "assert 'generate_many' not in dir(hypernet)\n"
        "assert not {'torch', 'peft', 'hypernet.generators'} & set(sys.modules), sorted(sys.modules)\n"
    )
    subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        env={**os.environ, "PYTHONPATH": str(Path(hypernet.__file__).parents[1])},
    )
