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
