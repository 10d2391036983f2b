import pytest
from peft import get_peft_model_state_dict
from peft.tuners.lora import LoraLayer

from hypernet import (
    CheckpointMismatchError,
    NoLoraTargetsError,
    TargetSpec,
    discover_targets,
)
from hypernet.base_models import add_lora, tiny_gpt2, tiny_llama


def test_spec_matches_peft_state_dict(arch_model):
    spec = discover_targets(arch_model)
    peft_shapes = {k: tuple(v.shape) for k, v in get_peft_model_state_dict(arch_model).items()}
    assert spec.state_dict_shapes() == peft_shapes
    assert list(spec.state_dict_shapes()) == list(peft_shapes)  # same order too
    n_lora_layers = sum(isinstance(m, LoraLayer) for m in arch_model.modules())
    assert len(spec) == n_lora_layers


def test_llama_gqa_shapes_come_from_peft():
    spec = discover_targets(
        add_lora(
            tiny_llama(hidden_size=64, num_heads=4, num_kv_heads=2),
            rank=4,
            target_modules=["q_proj", "k_proj", "v_proj"],
        )
    )
    by_type = {t.module_type: t for t in spec if t.layer == 1}
    assert by_type["self_attn.q_proj"].out_features == 64
    assert by_type["self_attn.k_proj"].out_features == 32  # 2 kv heads × 16
    assert by_type["self_attn.v_proj"].out_features == 32
    assert {t.layer for t in spec} == {0, 1}
    assert spec.num_layers == 2


def test_gpt2_fused_attention_and_same_named_modules_are_separate_types():
    spec = discover_targets(add_lora(tiny_gpt2(hidden_size=64), rank=4, target_modules=["c_attn", "c_proj"]))
    types = {t.module_type: (t.in_features, t.out_features) for t in spec}
    assert types == {"attn.c_attn": (64, 192), "attn.c_proj": (64, 64), "mlp.c_proj": (256, 64)}
    assert list(spec.groups) == ["attn.c_attn", "attn.c_proj", "mlp.c_proj"]


def test_rank_pattern_splits_a_ragged_type_into_shape_groups():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(
        tiny_llama(), LoraConfig(r=4, target_modules=["q_proj"], rank_pattern={"layers.1.self_attn.q_proj": 8})
    )
    spec = discover_targets(model)
    assert sorted(t.rank for t in spec) == [4, 8]
    assert len(spec.groups) == 2
    assert all(len(g) == 1 for g in spec.groups.values())


def test_model_without_lora_raises():
    with pytest.raises(NoLoraTargetsError, match="get_peft_model"):
        discover_targets(tiny_llama())


def test_json_round_trip_and_compatibility_errors(llama_model):
    spec = discover_targets(llama_model)
    assert TargetSpec.from_json(spec.to_json()) == spec
    spec.check_compatible(TargetSpec.from_json(spec.to_json()))
    other = discover_targets(add_lora(tiny_llama(), rank=8))
    with pytest.raises(CheckpointMismatchError, match="shape"):
        spec.check_compatible(other)
    fewer = TargetSpec(spec.targets[:1])
    with pytest.raises(CheckpointMismatchError, match="missing"):
        spec.check_compatible(fewer)


def test_empty_spec_rejected():
    with pytest.raises(NoLoraTargetsError):
        TargetSpec(())
