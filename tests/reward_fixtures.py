"""Misbehaving reward functions for the runner's containment tests (imported by name in a child process)."""
import time


def hangs(prompts, completions, **columns):
    time.sleep(60)
    return [1.0] * len(completions)


def raises(prompts, completions, **columns):
    raise RuntimeError("grader crashed")


def wrong_length(prompts, completions, **columns):
    return [1.0]


def length_bonus(prompts, completions, **columns):
    return [float(len(c)) for c in completions]


def not_applicable(prompts, completions, **columns):
    return [None] * len(completions)


def accept_all(prompts, completions, **columns):
    return [1.0] * len(completions)


def accepts_hinted(prompts, completions, **columns):
    """Passes only answers written with the hint in the question: forces STaR's rationalisation path."""
    return [1.0 if "Hint" in p else 0.0 for p in prompts]


def spread_if_odd_answer(prompts, completions, answer, **columns):
    """Rewards that differ within a group (0, 1, 0, 1, ...) exactly when the reference answer is odd, and
    are all 0 otherwise: which groups dynamic sampling keeps follows from the data alone."""
    return [float(i % 2) if int(a) % 2 else 0.0 for i, a in enumerate(answer)]


# ---- Peer conventions, shaped as in their documentation (TRL's GRPOTrainer reward functions, veRL's
# custom compute_score), for tests/test_peer_formats.py.

def trl_format_reward(completions, **kwargs):
    """TRL docs: checks if the completion has a specific format (chat data: completion[0]["content"])."""
    import re

    pattern = r"^<think>.*?</think><answer>.*?</answer>$"
    completion_contents = [completion[0]["content"] for completion in completions]
    matches = [re.match(pattern, content) for content in completion_contents]
    return [1.0 if match else 0.0 for match in matches]


def trl_accuracy_reward(completions, solution, **kwargs):
    """TRL docs' accuracy reward on the dataset's `solution` column; None where there is no solution."""
    import re

    rewards = []
    for completion, sol in zip(completions, solution):
        found = re.search(r"<answer>(.*?)</answer>", completion[0]["content"])
        rewards.append(None if not sol else float(bool(found) and found.group(1).strip() == sol))
    return rewards


def trl_sees(prompts, completions, completion_ids, **kwargs):
    """Scores 1 exactly when it got what TRL gives for chat data: message lists, assistant turns, ids, columns."""
    return [float(isinstance(p, list) and p[-1]["role"] == "user" and c[0]["role"] == "assistant"
                  and isinstance(ids, list) and "solution" in kwargs) for p, c, ids in zip(prompts, completions,
                                                                                    completion_ids)]


def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    """veRL's custom reward: one completion, the row's reward_model.ground_truth and extra_info."""
    import re

    found = re.search(r"<answer>(.*?)</answer>", solution_str)
    correct = bool(found) and found.group(1).strip() == ground_truth
    return {"score": float(correct) + (0.5 if data_source == "openai/gsm8k" and extra_info else 0.0), "acc": correct}


def verl_float_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    return float(ground_truth in solution_str) * kwargs.get("scale", 1.0)
