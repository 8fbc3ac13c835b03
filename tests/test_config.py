"""Loading the example config with overrides. Bad values are in the corpus: tests/bad_inputs/cases.yaml."""
from rl_system.config import TrainConfig, load_config


def test_example_config_loads_with_overrides():
    cfg = load_config("configs/r1_zero.yaml", ["learner.lr=3e-6", "num_steps=7", "rollout.stop_strings=[]",
                                                "reward.functions=[{name: accuracy}]"])
    assert isinstance(cfg, TrainConfig)
    assert cfg.learner.lr == 3e-6 and cfg.num_steps == 7
    assert cfg.rollout.stop_strings == ()
    assert cfg.reward.functions[0].name == "accuracy" and cfg.reward.functions[0].weight == 1.0
    assert cfg.learner.zero_stage == 2


def test_dapo_settings_load_from_yaml_and_overrides(tmp_path):
    path = tmp_path / "dapo.yaml"
    path.write_text("dynamic_sampling: {enabled: true, max_rounds: 3}\n"
                    "reward: {overlong_buffer: 16, overlong_penalty: 0.5}\nrollout: {max_new_tokens: 64}\n")
    cfg = load_config(path)
    assert cfg.dynamic_sampling.enabled and cfg.dynamic_sampling.max_rounds == 3
    assert (cfg.reward.overlong_buffer, cfg.reward.overlong_penalty) == (16, 0.5)
    cfg = load_config("configs/r1_zero.yaml", ["dynamic_sampling.enabled=true", "reward.overlong_buffer=8"])
    assert cfg.dynamic_sampling.enabled and cfg.dynamic_sampling.max_rounds == 4 and cfg.reward.overlong_buffer == 8
    default = load_config("configs/r1_zero.yaml")
    assert not default.dynamic_sampling.enabled and default.reward.overlong_buffer == 0  # both off by default
