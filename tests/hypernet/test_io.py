import copy
import json

import pytest
import torch
from peft import PeftModel

from hypernet import (
    CheckpointMismatchError,
    ConfigError,
    CorruptFileError,
    HyperLoRA,
    HyperLoRAConfig,
    adapter_hash,
    discover_targets,
    export_adapter,
    functional_forward,
    load_hypernet,
    save_hypernet,
)
from hypernet.base_models import add_lora, tiny_llama
from hypernet.io import HYPERNET_META, HYPERNET_WEIGHTS


def _trained(model, ids=("a", "b")):
    hn = HyperLoRA.from_peft_model(model, HyperLoRAConfig(chunk_size=None), client_ids=list(ids))
    with torch.no_grad():  # move every weight away from its init so B ≠ 0
        for p in hn.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return hn


def test_exported_adapter_loads_in_peft_and_matches_functional_forward(arch_model, tmp_path):
    hn = _trained(arch_model)
    digest = export_adapter(hn, "a", tmp_path / "adapter-a")
    assert (tmp_path / "adapter-a" / "adapter_config.json").exists()
    x = torch.randint(0, 260, (2, 10))
    with torch.no_grad():
        expected = functional_forward(arch_model, hn.generate("a"), input_ids=x).logits
        base_model = copy.deepcopy(arch_model).unload()  # the plain base model, as a user loads it
        loaded = PeftModel.from_pretrained(base_model, tmp_path / "adapter-a").eval()
        got = loaded(input_ids=x).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    assert digest == adapter_hash(hn.generate("a"))


def test_save_load_generate_is_bitwise_identical(llama_model, tmp_path):
    hn = _trained(llama_model, ids=("org/a", "b", "c"))
    save_hypernet(hn, tmp_path / "ckpt", extra={"round": 3})
    loaded = load_hypernet(tmp_path / "ckpt", spec=discover_targets(llama_model))
    assert loaded.client_ids == ["org/a", "b", "c"]
    with torch.no_grad():
        for cid in hn.client_ids:
            a, b = hn.generate(cid), loaded.generate(cid)
            assert all(torch.equal(a[k], b[k]) for k in a)
            assert adapter_hash(a) == adapter_hash(b)
    meta = json.loads((tmp_path / "ckpt" / HYPERNET_META).read_text())
    assert meta["extra"] == {"round": 3}


@pytest.mark.parametrize("residual", [False, True])
def test_removing_a_client_at_the_tensor_level_writes_what_save_hypernet_would(llama_model, tmp_path, residual):
    from hypernet.io import remove_client_from_checkpoint

    hn = HyperLoRA.from_peft_model(llama_model, HyperLoRAConfig(client_residual=residual), client_ids=["a", "b", "c"])
    with torch.no_grad():
        for p in hn.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    save_hypernet(hn, tmp_path / "ckpt", extra={"round": 3}, files={"optimizer.safetensors": b"old"})
    assert remove_client_from_checkpoint(tmp_path / "ckpt", "b", files={"optimizer.safetensors": b"new"})
    hn.remove_client("b")
    save_hypernet(hn, tmp_path / "gold", extra={"round": 3})
    for name in (HYPERNET_WEIGHTS, HYPERNET_META):  # byte for byte
        assert (tmp_path / "ckpt" / name).read_bytes() == (tmp_path / "gold" / name).read_bytes()
    assert (tmp_path / "ckpt" / "optimizer.safetensors").read_bytes() == b"new"
    assert load_hypernet(tmp_path / "ckpt").client_ids == ["a", "c"]
    before = (tmp_path / "ckpt" / HYPERNET_WEIGHTS).read_bytes()
    assert not remove_client_from_checkpoint(tmp_path / "ckpt", "b")  # not there: nothing written
    assert (tmp_path / "ckpt" / HYPERNET_WEIGHTS).read_bytes() == before
    (tmp_path / "ckpt" / HYPERNET_WEIGHTS).write_bytes(before[:-8] + b"tampered")
    with pytest.raises(CorruptFileError):
        remove_client_from_checkpoint(tmp_path / "ckpt", "a")


def test_adapter_hash_is_canonical_and_sensitive():
    a = {"x.lora_A.weight": torch.arange(6.0).view(2, 3), "x.lora_B.weight": torch.ones(3, 2)}
    reordered = dict(reversed(list(a.items())))
    assert adapter_hash(a) == adapter_hash(reordered)
    assert adapter_hash(a) == adapter_hash({k: v.t().contiguous().t() for k, v in a.items()})
    changed = dict(
        a,
        **{"x.lora_B.weight": torch.ones(3, 2).index_put_((torch.tensor(0), torch.tensor(0)), torch.tensor(1.0000001))},
    )
    assert adapter_hash(changed) != adapter_hash(a)
    assert adapter_hash({k: v.double() for k, v in a.items()}) != adapter_hash(a)
    assert adapter_hash({k: v.reshape(-1) for k, v in a.items()}) != adapter_hash(a)
    assert len(adapter_hash(a)) == 64


def test_tampered_or_missing_files_raise_corrupt(llama_model, tmp_path):
    save_hypernet(_trained(llama_model), tmp_path / "ckpt")
    weights = tmp_path / "ckpt" / HYPERNET_WEIGHTS
    blob = bytearray(weights.read_bytes())
    blob[-3] ^= 0xFF
    weights.write_bytes(bytes(blob))
    with pytest.raises(CorruptFileError, match="sha256"):
        load_hypernet(tmp_path / "ckpt")
    (tmp_path / "ckpt" / HYPERNET_META).write_text("{not json")
    with pytest.raises(CorruptFileError, match="JSON"):
        load_hypernet(tmp_path / "ckpt")
    with pytest.raises(CorruptFileError, match="missing"):
        load_hypernet(tmp_path / "nowhere")


def test_checkpoint_for_another_model_is_refused(llama_model, tmp_path):
    save_hypernet(_trained(llama_model), tmp_path / "ckpt")
    wider = add_lora(tiny_llama(hidden_size=96, num_heads=4, num_kv_heads=2), rank=4)
    with pytest.raises(CheckpointMismatchError, match="shape"):
        load_hypernet(tmp_path / "ckpt", spec=discover_targets(wider))


def test_resave_replaces_checkpoint_atomically(llama_model, tmp_path):
    hn = _trained(llama_model)
    save_hypernet(hn, tmp_path / "ckpt")
    hn.add_client("late")
    save_hypernet(hn, tmp_path / "ckpt")
    assert load_hypernet(tmp_path / "ckpt").client_ids == ["a", "b", "late"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temp dirs left behind


def test_resaving_keeps_sibling_files_and_replaces_them_in_the_same_swap(llama_model, tmp_path):
    hn = _trained(llama_model)
    save_hypernet(hn, tmp_path / "ckpt", files={"optimizer.safetensors": b"state v1"})
    hn.remove_client("a")
    save_hypernet(hn, tmp_path / "ckpt")  # a plain resave never drops what lives beside it
    assert (tmp_path / "ckpt" / "optimizer.safetensors").read_bytes() == b"state v1"
    save_hypernet(hn, tmp_path / "ckpt", files={"optimizer.safetensors": b"state v2"})
    assert (tmp_path / "ckpt" / "optimizer.safetensors").read_bytes() == b"state v2"
    assert load_hypernet(tmp_path / "ckpt").client_ids == ["b"]
    with pytest.raises(ConfigError):
        save_hypernet(hn, tmp_path / "ckpt", files={HYPERNET_META: b"{}"})


def _versions(tmp_path):
    from hypernet.atomic import atomic_directory

    target = tmp_path / "folder"
    atomic_directory(target, lambda d: (d / "v").write_text("old"))
    return target, target.with_name(".folder.x1y2.tmp"), target.with_name(".folder.old")


@pytest.mark.parametrize(
    ("crash_after", "expect"),
    [
        ("half a fill", "old"),  # the fill incomplete, the folder untouched: roll back
        ("the fill", "old"),  # the fill complete, not swapped: roll back (the old one is still there)
        ("parking the old", "old"),  # the folder missing between the renames: put the old one back
        ("the swap", "new"),  # both renames done, .old not deleted yet
        ("half the delete", "new"),  # .old partly deleted
    ],
)
def test_an_interrupted_folder_swap_is_settled_and_leaves_no_old_bytes(tmp_path, crash_after, expect):
    import os

    from hypernet.atomic import atomic_directory, recover_directory, recover_tree

    target, new, old = _versions(tmp_path)
    new.mkdir()
    (new / "v").write_text("new" if crash_after != "half a fill" else "ne")
    if crash_after in ("parking the old", "the swap", "half the delete"):
        os.replace(target, old)
    if crash_after in ("the swap", "half the delete"):
        os.replace(new, target)
    if crash_after == "half the delete":
        (old / "v").unlink()
    (tmp_path / ".other.txt.x1y2.tmp").write_text("half a file")
    recover_tree(tmp_path)
    assert (target / "v").read_text() == expect
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder"]  # nothing of the old bytes is left
    assert recover_directory(target) == []  # idempotent
    atomic_directory(target, lambda d: (d / "v").write_text("next"))
    assert (target / "v").read_text() == "next"


def test_the_next_swap_of_a_folder_settles_an_interrupted_one_first(tmp_path):
    import os

    from hypernet.atomic import atomic_directory

    target, _, old = _versions(tmp_path)
    os.replace(target, old)  # killed between the renames
    atomic_directory(target, lambda d: (d / "v").write_text("next"))
    assert (target / "v").read_text() == "next" and sorted(p.name for p in tmp_path.iterdir()) == ["folder"]


def test_a_failed_swap_rolls_back(tmp_path, monkeypatch):
    import os

    from hypernet.atomic import atomic_directory

    target, _, _ = _versions(tmp_path)
    real = os.replace

    def fail_second(src, dst):
        if str(dst) == str(target) and str(src).endswith(".tmp"):
            raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", fail_second)
    with pytest.raises(OSError):
        atomic_directory(target, lambda d: (d / "v").write_text("next"))
    assert (target / "v").read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["folder"]
