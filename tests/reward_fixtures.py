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
