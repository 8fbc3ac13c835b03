"""Any causal LM, not only Llama: `make-tiny-model --arch` writes llama, qwen2, gpt2 and gpt_neox models our
loader accepts; LoRA's default (all-linear) wraps every linear layer of each, GPT-2's Conv1D included, and the
merged weights equal peft's own merge; and GRPO trains a GPT-2 with LoRA through Ray."""
import json
import warnings

import pytest
import torch
from peft.tuners.lora import LoraLayer

from rl_system.cli import main as cli
from rl_system.config import LoraConfig
from rl_system.config.choices import TINY_MODEL_ARCHS
from rl_system.models import apply_lora, check_model_dir, load_tokenizer, merged_named_parameters, save_merged
from tests.test_lora import load, random_adapters

IDS = torch.tensor([[1, 5, 9, 200, 17, 3, 42, 8]])
# Each family's linear layers (the output head excepted), by their names' last part.
LINEAR_LAYERS = {
    "llama": {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"},
    "qwen2": {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"},
    "gpt2": {"c_attn", "c_proj", "c_fc"},
    "gpt_neox": {"query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"},
}


@pytest.fixture(scope="session")
def arch_model_dirs(tmp_path_factory):
    """{arch: directory} written by `python -m rl_system make-tiny-model --arch ARCH` with its size flags."""
    root = tmp_path_factory.mktemp("archs")
    for arch in TINY_MODEL_ARCHS:
        cli(["make-tiny-model", "--arch", arch, "--output", str(root / arch), "--hidden-size", "32", "--layers", "2",
             "--heads", "4", "--kv-heads", "2", "--intermediate-size", "48"])
    return {arch: root / arch for arch in TINY_MODEL_ARCHS}


@pytest.mark.parametrize("arch", TINY_MODEL_ARCHS)
def test_make_tiny_model_writes_a_loadable_model_of_each_arch(arch_model_dirs, arch):
    path = arch_model_dirs[arch]
    check_model_dir(path)  # config.json, safetensors, tokenizer and chat template
    tokenizer = load_tokenizer(path)
    assert tokenizer.apply_chat_template([{"role": "user", "content": "2+2?"}], tokenize=False)
    model = load(path)
    assert model.config.model_type == arch
    assert (model.config.hidden_size, model.config.num_hidden_layers, model.config.num_attention_heads) == (32, 2, 4)
    assert model.config.vocab_size == len(tokenizer)
    with torch.no_grad():
        assert model(IDS).logits.shape == (1, IDS.shape[1], len(tokenizer))


@pytest.mark.parametrize("flags, error", [
    (["--hidden-size", "30"], "error: heads: hidden size 30 must split into 4 heads, and those into 2 key/value heads"),
    (["--heads", "8", "--kv-heads", "3"], "error: heads: hidden size 64 must split into 8 heads, and those into 3 "),
    (["--arch", "gpt2", "--heads", "3"], "error: heads: hidden size 64 must split into 3 heads$"),
])
def test_make_tiny_model_refuses_heads_that_do_not_split(tmp_path, flags, error):
    with pytest.raises(SystemExit, match=error):
        cli(["make-tiny-model", "--output", str(tmp_path / "m"), *flags])
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("arch", TINY_MODEL_ARCHS)
def test_default_lora_wraps_every_linear_layer(arch_model_dirs, arch):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. peft's about fan_in_fan_out on GPT-2's Conv1D
        peft_model = apply_lora(load(arch_model_dirs[arch]), LoraConfig(r=4))
    wrapped = {name for name, m in peft_model.get_base_model().named_modules() if isinstance(m, LoraLayer)}
    assert {name.rpartition(".")[2] for name in wrapped} == LINEAR_LAYERS[arch]
    linear = {name for name, m in load(arch_model_dirs[arch]).named_modules()
              if name.rpartition(".")[2] in LINEAR_LAYERS[arch]}
    assert wrapped == linear  # every layer of every block; the output head (lm_head, embed_out) left alone


def test_gpt2_refuses_llama_names_and_its_tied_head(arch_model_dirs):
    gpt2 = arch_model_dirs["gpt2"]
    with pytest.raises(ValueError, match=r"\['q_proj', 'v_proj'\] match no module .*c_attn"):
        apply_lora(load(gpt2), LoraConfig(r=4, target_modules=("q_proj", "v_proj")))
    with pytest.raises(ValueError, match="'lm_head' shares its weight with 'transformer.wte'"):
        apply_lora(load(gpt2), LoraConfig(r=4, target_modules=("c_attn", "lm_head")))


@pytest.mark.parametrize("arch", TINY_MODEL_ARCHS)
def test_merged_weights_equal_peft_merge(arch_model_dirs, arch, tmp_path):
    path = arch_model_dirs[arch]
    peft_model = random_adapters(apply_lora(load(path), LoraConfig(r=4, alpha=8.0)))
    merged = {name: t.clone() for name, t in merged_named_parameters(peft_model)}
    save_merged(peft_model, tmp_path / "merged")
    with torch.no_grad():
        adapted_logits = peft_model(IDS).logits
    by_peft = dict(peft_model.merge_and_unload().named_parameters())
    assert list(merged) == list(by_peft) == [name for name, _ in load(path).named_parameters()]
    for name, tensor in merged.items():
        torch.testing.assert_close(tensor, by_peft[name], rtol=0, atol=1e-6, msg=name)
    base = dict(load(path).named_parameters())
    assert any(not torch.equal(tensor, base[name]) for name, tensor in merged.items())  # the adapters count
    plain = load(tmp_path / "merged")
    with torch.no_grad():
        torch.testing.assert_close(plain(IDS).logits, adapted_logits, rtol=0, atol=1e-5)


@pytest.mark.integration
def test_two_grpo_steps_with_lora_on_a_gpt2_model(arch_model_dirs, tmp_path):
    ray = pytest.importorskip("ray")
    from actors.controller import RayWorkers, connect, resolve_paths
    from rl_system.config import load_config
    from rl_system.pipeline import r1_zero

    model_dir = arch_model_dirs["gpt2"]
    cfg = resolve_paths(load_config("configs/r1_zero.yaml", [
        f"model.path={model_dir}", f"output_dir={tmp_path / 'run'}", "num_steps=2", "prompts_per_step=2",
        "rollout.group_size=4", "rollout.max_new_tokens=8", "learner.micro_batch_size=4", "learner.num_ranks=1",
        "rollout.num_workers=1", "learner.lr=0.05", "learner.lora.r=4",
        # A length reward gives the random model's groups a spread, hence non-zero advantages.
        "reward.functions=[{name: format, weight: 0.5}, {name: 'tests.reward_fixtures:length_bonus', weight: 0.1}]",
        "data.num_eval=2", "eval_max_new_tokens=4", "cluster.include_dashboard=false",
    ]))
    connect(cfg)
    try:
        workers = RayWorkers(cfg)
        r1_zero.train(cfg, workers)
        assert workers.rollout_versions() == [2]
        workers.shutdown()
    finally:
        ray.shutdown()

    checkpoint = tmp_path / "run" / "checkpoint"
    assert json.loads((checkpoint / "trainer_state.json").read_text())["version"] == 2
    trained, initial = load(checkpoint), load(model_dir)
    assert type(trained).__name__ == "GPT2LMHeadModel"
    weights = dict(initial.named_parameters())
    moved = {name for name, p in trained.named_parameters() if not torch.equal(p, weights[name])}
    # LoRA: exactly the Conv1D layers (their adapters merged in) move; embeddings, norms and biases stay.
    assert moved and {name.rsplit(".", 2)[1] for name in moved} <= LINEAR_LAYERS["gpt2"]
    assert all(name.endswith(".weight") for name in moved)
