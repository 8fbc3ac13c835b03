"""LoRA (rl_system/models/lora.py): merged weights under the plain model's names, computed beside the
model; a saved merge that loads as a plain HF model; and the learner.lora config keys."""
import pytest
import torch
from transformers import AutoModelForCausalLM

from rl_system.config import ConfigError, LoraConfig, load_config
from rl_system.models import apply_lora, merged_named_parameters, save_merged

IDS = torch.tensor([[1, 5, 9, 200, 17, 3, 42, 8]])


def load(path):
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def random_adapters(peft_model):
    """lora_B drawn at random (peft starts it at zero, a merge that changes nothing)."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.5)
    return peft_model


@pytest.fixture
def lora_model(tiny_model_dir):
    """The tiny model with rank-4 adapters whose lora_B is random."""
    return random_adapters(apply_lora(load(tiny_model_dir), LoraConfig(r=4, alpha=8.0)))


def test_merged_weights_have_plain_names_and_base_plus_delta(tiny_model_dir, lora_model):
    plain_names = [name for name, _ in load(tiny_model_dir).named_parameters()]
    before = {name: p.detach().clone() for name, p in lora_model.named_parameters()}
    merged = dict(merged_named_parameters(lora_model))
    assert list(merged) == plain_names

    q = lora_model.get_base_model().model.layers[0].self_attn.q_proj
    a, b = q.lora_A["default"].weight, q.lora_B["default"].weight
    by_hand = q.base_layer.weight + (b @ a) * (8.0 / 4)
    assert torch.equal(merged["model.layers.0.self_attn.q_proj.weight"], by_hand)
    assert not torch.equal(by_hand, q.base_layer.weight)
    assert not merged["model.layers.0.self_attn.q_proj.weight"].requires_grad
    for name, p in lora_model.named_parameters():  # nothing merged into the model, not even a rounding
        assert torch.equal(p, before[name]), name
    trainable = [name for name, p in lora_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)


def test_disabled_adapter_gives_the_original_logits(tiny_model_dir, lora_model):
    with torch.no_grad():
        original = load(tiny_model_dir)(IDS).logits
        with lora_model.disable_adapter():
            assert torch.equal(lora_model(IDS).logits, original)
        assert not torch.allclose(lora_model(IDS).logits, original)  # the adapter does change the output


def test_saved_merge_loads_as_a_plain_model(tmp_path, lora_model):
    save_merged(lora_model, tmp_path / "merged")
    assert (tmp_path / "merged" / "model.safetensors").is_file()
    assert (tmp_path / "merged" / "adapter" / "adapter_config.json").is_file()
    plain = load(tmp_path / "merged")
    assert plain.lm_head.weight is plain.model.embed_tokens.weight  # still tied
    with torch.no_grad():
        torch.testing.assert_close(plain(IDS).logits, lora_model(IDS).logits, rtol=0, atol=1e-5)


def test_targets_that_match_nothing_are_refused(tiny_model_dir):
    with pytest.raises(ValueError, match=r"\['query', 'value'\] match no module .*q_proj") as e:
        apply_lora(load(tiny_model_dir), LoraConfig(r=4, target_modules=("query", "value")))
    assert "\n" not in str(e.value)


def test_a_tied_target_is_refused(tiny_model_dir):
    with pytest.raises(ValueError, match="'lm_head' shares its weight with 'model.embed_tokens'"):
        apply_lora(load(tiny_model_dir), LoraConfig(r=4, target_modules=("lm_head",)))


def test_lora_config_keys(tmp_path):
    path = tmp_path / "lora.yaml"
    path.write_text("learner: {lora: {r: 16, target_modules: [q_proj, v_proj]}}\n")
    assert load_config(path).learner.lora == LoraConfig(r=16, target_modules=("q_proj", "v_proj"))
    assert load_config(None, ["learner.lora.r=8", "learner.lora.alpha=16"]).learner.lora.alpha == 16.0
    assert load_config(None, []).learner.lora == LoraConfig(r=0, target_modules="all-linear")
    path.write_text("learner: {lora: {r: 16, target_modules: all-linear}}\n")  # TRL's and peft's form
    assert load_config(path).learner.lora.target_modules == "all-linear"
    assert load_config(None, ["learner.lora.target_modules=[c_attn]"]).learner.lora.target_modules == ("c_attn",)


@pytest.mark.parametrize("overrides, error", [
    (["learner.lora.r=-1"], "config key 'learner.lora.r': expected an integer >= 0 (0: LoRA off), got -1"),
    (["learner.lora.r=8", "learner.zero_stage=3"],
     "config key 'learner.lora.r': expected 0 (LoRA off) with learner.zero_stage=3: LoRA needs learner.zero_stage "
     "0, 1 or 2, got 8"),
    (["learner.lora.alpha=0"], "config key 'learner.lora.alpha': expected a positive number, got 0.0"),
    (["learner.lora.dropout=1"], "config key 'learner.lora.dropout': expected a number in [0, 1), got 1.0"),
    (["learner.lora.target_modules=[]"],
     "config key 'learner.lora.target_modules': expected all-linear or a non-empty list of module names, got ()"),
    (["learner.lora.target_modules=q_proj"],
     "config key 'learner.lora.target_modules': expected all-linear or a non-empty list of module names, "
     "got 'q_proj'"),
    (["learner.lora.target_modules=3"], "config key 'learner.lora.target_modules': expected a string or a list, got 3"),
])
def test_bad_lora_config_is_one_line(overrides, error):
    with pytest.raises(ConfigError) as e:
        load_config(None, overrides)
    assert str(e.value) == error
