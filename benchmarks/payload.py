"""What a PromptGroup costs on the wire (issue 16): one pickle round trip (dumps + loads, what a
trip through the object store pays on each side) of a group whose token payload is Python lists of
ints and floats, against the same group as it travels now, numpy arrays (rl_system/types.py).
No cluster and no model: the same random tokens and log-probs both ways, medians of --repeats.

    python benchmarks/payload.py [--completions 16] [--tokens 2048] [--repeats 50]
"""
from __future__ import annotations

import argparse
import pickle

import numpy as np
from _common import median_seconds

from rl_system.data import Problem
from rl_system.types import LOGPROB_DTYPE, TOKEN_DTYPE, PromptGroup


def make_group(completions: int, tokens: int, seed: int = 0) -> PromptGroup:
    rng = np.random.default_rng(seed)
    return PromptGroup(Problem(0, "q", "1"), list(range(100, 164)),
                       [rng.integers(100, 49000, tokens, dtype=TOKEN_DTYPE) for _ in range(completions)],
                       [f"{i} " + "x" * 4 * tokens for i in range(completions)],  # the decoded text
                       [-rng.exponential(1.0, tokens).astype(LOGPROB_DTYPE) for _ in range(completions)],
                       [False] * completions, 0, total_rewards=[0.0] * completions)


def as_lists(group: PromptGroup) -> PromptGroup:
    """The same group with the payload PromptGroup used to carry: lists (set after construction,
    since the constructor converts lists to arrays)."""
    copy = pickle.loads(pickle.dumps(group))
    copy.completion_ids = [ids.tolist() for ids in group.completion_ids]
    copy.logprobs = [lp.tolist() for lp in group.logprobs]
    return copy


def round_trip_seconds(group: PromptGroup, repeats: int) -> float:
    """Median seconds of pickle.loads(pickle.dumps(group)) after one untimed call."""
    return median_seconds(lambda: pickle.loads(pickle.dumps(group, protocol=pickle.HIGHEST_PROTOCOL)), repeats, 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--completions", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=2048, help="every completion's length")
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    group = make_group(args.completions, args.tokens)
    bare = pickle.loads(pickle.dumps(group))
    bare.completions = [""] * args.completions  # the token payload alone, without the decoded text
    print(f"pickle round trip of a {args.completions} x {args.tokens}-token PromptGroup, median of {args.repeats}")
    print("| | payload as lists (ms) | as numpy arrays (ms) | lists / arrays |\n|---|---:|---:|---:|")
    for name, g in (("whole group, decoded text included", group), ("token payload only", bare)):
        lists, arrays = round_trip_seconds(as_lists(g), args.repeats), round_trip_seconds(g, args.repeats)
        print(f"| {name} | {lists * 1e3:.2f} | {arrays * 1e3:.2f} | {lists / arrays:.1f}x |")

if __name__ == "__main__":
    main()
