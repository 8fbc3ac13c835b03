"""Reward plug-ins that are wrong in one way each, named in cases.yaml as tests.bad_inputs.plugins:<name>."""
import math

NOT_A_FUNCTION = 0.5


def no_kwargs(prompts, completions):
    """Wrong signature: the dataset's columns (answer, task, ...) arrive as keywords and have nowhere to go."""
    return [1.0] * len(completions)


def one_argument(text, **kwargs):
    """Wrong signature: one text by position, and no parameter named completions (TRL) or solution_str (veRL)."""
    return [1.0]


def wrong_length(prompts, completions, **kwargs):
    return [1.0]


def nan_score(prompts, completions, **kwargs):
    return [math.nan] * len(completions)


def inf_score(prompts, completions, **kwargs):
    return [1.0] + [math.inf] * (len(completions) - 1)


def text_score(prompts, completions, **kwargs):
    return ["high"] * len(completions)


def one_number(prompts, completions, **kwargs):
    return 1.0


def raises(prompts, completions, **kwargs):
    raise KeyError("solution")


def hangs(prompts, completions, **kwargs):
    import time

    time.sleep(30)
    return [1.0] * len(completions)


def needs_threshold(prompts, completions, *, threshold, **kwargs):
    return [float(len(c) > threshold) for c in completions]


def verl_no_score(data_source, solution_str, ground_truth, extra_info=None):
    """veRL's convention, but the dict it returns lacks the "score" veRL reads."""
    return {"acc": 1.0}
