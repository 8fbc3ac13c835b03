"""Test-time search against verifiers: self-consistency, best-of-N, weighted best-of-N, PRM beam
search and MCTS, written against the Policy / Verifier protocols in base.py (no Ray here)."""
from rl_system.search.answers import normalize_answer, vote
from rl_system.search.base import Continuation, Policy, Request, SearchResult, Verifier, cut_step
from rl_system.search.beam import prm_beam_search
from rl_system.search.mcts import mcts
from rl_system.search.sampling import best_of_n, greedy, majority_vote, weighted_best_of_n

__all__ = ["Continuation", "Policy", "Request", "SearchResult", "Verifier", "best_of_n", "cut_step", "greedy",
           "majority_vote", "mcts", "normalize_answer", "prm_beam_search", "vote", "weighted_best_of_n"]
