import pytest

from rl_system.config import ConfigError, TrainConfig, load_config


def test_example_config_loads_with_overrides():
    cfg = load_config("configs/r1_zero.yaml", ["learner.lr=3e-6", "num_steps=7", "rollout.stop_strings=[]",
                                                "reward.functions=[{name: accuracy}]"])
    assert isinstance(cfg, TrainConfig)
    assert cfg.learner.lr == 3e-6 and cfg.num_steps == 7
    assert cfg.rollout.stop_strings == ()
    assert cfg.reward.functions[0].name == "accuracy" and cfg.reward.functions[0].weight == 1.0
    assert cfg.learner.zero_stage == 2


@pytest.mark.parametrize("override, message", [
    ("learner.lrr=1", "unknown config key 'learner.lrr'"),
    ("learner.lr=fast", "config key 'learner.lr': expected a number, got 'fast'"),
    ("num_steps=2.5", "config key 'num_steps': expected an integer"),
    ("learner.zero_stage=4", "config key 'learner.zero_stage': expected 0, 1, 2 or 3"),
    ("max_staleness=-1", "config key 'max_staleness'"),
    ("mode=eager", "config key 'mode': expected 'sync' or 'async'"),
    ("mode=async", "config key 'max_staleness': expected an integer >= 1 with mode=async"),
    ("learner.micro_batch_size=5", "config key 'learner.micro_batch_size'"),
    ("rollout.top_p=1.5", "config key 'rollout.top_p'"),
    ("reward.functions=[{weight: 1}]", "config section 'reward.functions[0]'"),
    ("learner=3", "config key 'learner': expected a mapping"),
    ("noequals", "expected key=value"),
])
def test_bad_values_give_one_line_errors(override, message):
    with pytest.raises(ConfigError) as info:
        load_config("configs/r1_zero.yaml", [override])
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_config_file():
    with pytest.raises(ConfigError, match="not found"):
        load_config("configs/nope.yaml")
