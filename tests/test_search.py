"""Test-time search without Ray: every method on a deterministic scripted policy whose answers and
verifier scores are known, so each method's choice (and each method's difference from the
others) is checked exactly; plus token accounting, batching, the report and config errors."""
import csv
import dataclasses
import math
import re

import pytest

from rl_system.config import ConfigError, SearchConfig, load_config, sampling_for
from rl_system.data import Problem
from rl_system.search import (Continuation, best_of_n, cut_step, greedy, majority_vote, mcts,
                              normalize_answer, prm_beam_search, vote, weighted_best_of_n)
from rl_system.search.answers import answer_of
from rl_system.search.evaluate import beam_shape, evaluate_methods
from rl_system.search.mcts import Node, backpropagate, expand, final_answer, select, uct
from rl_system.search.report import write_report

SUM = Problem(0, "What is 3 + 4?", "7")
DOUBLE = Problem(1, "What is 2 + 2?", "4")


class ScriptedPolicy:
    """Continues a prefix along the scripted answers that start with it, in turn: the k-th time a
    prefix is continued it follows the k-th matching script (cycling), so runs are deterministic.
    Greedy always follows the first. A token is one character. Every call is recorded."""
    prefill = "<think>"

    def __init__(self, scripts: dict[str, list[str]]):
        self.scripts = scripts
        self.turns: dict[tuple[str, str], int] = {}
        self.calls: list[dict] = []
        self.generated = {question: 0 for question in scripts}  # tokens generated per question

    def sample(self, requests, n, max_new_tokens, step_delimiter=None, greedy=False):
        self.calls.append({"questions": [r.problem.question for r in requests], "n": n, "step": step_delimiter})
        out = []
        for request in requests:
            matching = [s for s in self.scripts[request.problem.question] if s.startswith(request.prefix)]
            continuations = []
            for _ in range(1 if greedy else n):
                key = (request.problem.question, request.prefix)
                turn = 0 if greedy else self.turns.get(key, 0)
                self.turns[key] = turn + (not greedy)
                rest = matching[turn % len(matching)][len(request.prefix):]
                if step_delimiter and step_delimiter in rest:
                    rest = rest[:rest.index(step_delimiter) + len(step_delimiter)]
                tokens = min(len(rest), max_new_tokens)
                self.generated[request.problem.question] += tokens
                continuations.append(Continuation(request.prefix + rest[:tokens], tokens, len(rest) <= max_new_tokens))
            out.append(continuations)
        return out


class TableVerifier:
    """Scores by a function of (problem, completion); records the size of every call."""

    def __init__(self, name, fn):
        self.name, self.fn, self.calls = name, fn, []

    def score(self, problems, completions):
        self.calls.append(len(completions))
        return [self.fn(p, c) for p, c in zip(problems, completions)]


def rule_grader():
    return TableVerifier("rule", lambda p, c: float(answer_of(c) == normalize_answer(p.answer)))


def answer(text: str, think: str = "so") -> str:
    return f"<think> {think}. </think> <answer>{text}</answer>"


def new_tokens(texts: list[str]) -> int:
    return sum(len(t) - len("<think>") for t in texts)


# Votes and verifier scores pull apart: 9 is the most frequent answer, one 8 has the top ORM
# score, and 7 (right) has the largest summed score.
VOTING = [answer("8", "guess"), answer("7", "add"), answer(" 7.0 ", "sum"),
          answer("9", "a"), answer("9", "b"), answer("9", "c")]
ORM_SCORES = {VOTING[0]: 0.95, VOTING[1]: 0.6, VOTING[2]: 0.6, VOTING[3]: 0.1, VOTING[4]: 0.1, VOTING[5]: 0.1}


def voting_setup():
    policy = ScriptedPolicy({SUM.question: VOTING, DOUBLE.question: [answer("4")]})
    orm = TableVerifier("orm", lambda p, c: ORM_SCORES.get(c, 0.5))
    return policy, orm


def test_answer_normalisation():
    assert {normalize_answer(a) for a in ["7", " 7.0 ", "$7$", "\\boxed{7}", "7.", "+7", "7.00"]} == {"7"}
    assert normalize_answer("1,000.50") == "1000.5" and normalize_answer("-0") == "0"
    assert normalize_answer("  Yes  Sir ") == "yes sir" and normalize_answer("") is None
    assert normalize_answer(None) is None and normalize_answer("-3") == "-3" != normalize_answer("3")
    assert answer_of("<think>x</think> <answer>1</answer> <answer> 2.0</answer>") == "2"  # the last block
    assert vote(["no answer", "still none"], [0.2, 0.9]) == 1  # nothing votes: the heaviest completion


def test_greedy_and_majority_vote():
    policy, _ = voting_setup()
    problems = [SUM, DOUBLE]
    assert [answer_of(r.completion) for r in greedy(problems, policy, 64)] == ["8", "4"]
    results = majority_vote(problems, policy, 6, 64)
    assert [answer_of(r.completion) for r in results] == ["9", "4"]  # three 9s outvote two 7s
    assert results[0].tokens == new_tokens(VOTING) and results[1].tokens == 6 * new_tokens([answer("4")])
    # the two spellings of 7 count as one answer: with 3 samples, 7 wins 2 to 1
    assert answer_of(majority_vote([SUM], ScriptedPolicy({SUM.question: VOTING}), 3, 64)[0].completion) == "7"
    assert len(policy.calls) == 2 and policy.calls[1] == {"questions": [SUM.question, DOUBLE.question], "n": 6,
                                                          "step": None}  # one batched call for all problems


def test_best_of_n_and_weighted_best_of_n():
    policy, orm = voting_setup()
    bon = best_of_n([SUM, DOUBLE], policy, orm, 6, 64)
    assert bon[0].completion == VOTING[0]  # the single top-scored answer, wrong
    assert orm.calls == [12]  # one verifier call for both problems' samples
    policy, orm = voting_setup()
    wbon = weighted_best_of_n([SUM, DOUBLE], policy, orm, 6, 64)
    assert answer_of(wbon[0].completion) == "7" and answer_of(wbon[1].completion) == "4"  # 1.2 beats 0.95 and 0.3
    assert wbon[0].tokens == new_tokens(VOTING)
    policy, orm = voting_setup()
    assert best_of_n([SUM], policy, orm, 1, 64)[0].completion == VOTING[0]  # N=1 is one plain sample


# Three reasoning paths; the first (and greedy) one goes wrong at its first step.
PATHS = ["<think> 3 plus 4 is 8. So 8. </think> <answer>8</answer>",
         "<think> 3 plus 4 is 7. So 7. </think> <answer>7</answer>",
         "<think> 3 plus 4 is 7. Hmm, 9. </think> <answer>9</answer>"]


FOUR = "<think> 2 and 2 make 4 </think> <answer>4</answer>"  # one step: no delimiter before the answer


def prm_score(problem, completion):
    """A process verifier that penalises every wrong number written so far."""
    wrong = sum(completion.count(d) for d in "89" if d != problem.answer)
    return 1.0 / (1 + wrong) - 0.01 * completion.count(".")


def test_cut_step_keeps_one_step():
    prefix = "<think> a."
    step = cut_step(prefix, Continuation(prefix + " b. c", 5, True), ".")  # generation overshot the delimiter
    assert step.text == "<think> a. b." and not step.finished
    done = cut_step(prefix, Continuation(prefix + " </think> <answer>7</answer> more", 9, True), ".")
    assert done.finished and done.text == "<think> a. </think> <answer>7</answer>"
    ended = cut_step(prefix, Continuation(prefix + " b", 2, True), ".")  # end of sequence, no delimiter
    assert ended.finished and ended.text == "<think> a. b"
    assert not cut_step(prefix, Continuation(prefix + " long", 4, False), ".").finished  # token limit: a long step


def test_prm_beam_search_follows_the_best_steps():
    policy = ScriptedPolicy({SUM.question: PATHS, DOUBLE.question: [FOUR]})
    prm = TableVerifier("prm", prm_score)
    results = prm_beam_search([SUM, DOUBLE], policy, prm, width=1, expansions=2, step_delimiter=".", max_steps=6,
                              step_max_tokens=48, max_new_tokens=64)
    assert results[0].completion == PATHS[1] and answer_of(results[1].completion) == "4"
    assert answer_of(greedy([SUM], ScriptedPolicy({SUM.question: PATHS}), 64)[0].completion) == "8"
    # level 1: both problems' roots; level 2: SUM's beam only (DOUBLE's first step finished its answer)
    assert [c["questions"] for c in policy.calls] == [[SUM.question, DOUBLE.question], [SUM.question], [SUM.question]]
    assert all(c["n"] == 2 and c["step"] == "." for c in policy.calls)
    # tokens: level 1 "is 8." + "is 7.", level 2 "So 7." + "Hmm, 9.", level 3 the answer tag twice
    step1 = len(" 3 plus 4 is 8.") + len(" 3 plus 4 is 7.")
    step2 = len(" So 7.") + len(" Hmm, 9.")
    assert results[0].tokens == step1 + step2 + 2 * len(" </think> <answer>7</answer>")
    assert [r.tokens for r in results] == [policy.generated[SUM.question], policy.generated[DOUBLE.question]]
    assert prm.calls == [2 + 1, 2, 1]  # distinct candidates per level, all problems in one call


def test_beam_search_writes_open_beams_to_the_end_after_max_steps():
    policy = ScriptedPolicy({SUM.question: PATHS})
    prm = TableVerifier("prm", prm_score)
    [result] = prm_beam_search([SUM], policy, prm, width=2, expansions=2, step_delimiter=".", max_steps=1,
                               step_max_tokens=48, max_new_tokens=64)
    assert [c["step"] for c in policy.calls] == [".", None] and policy.calls[1]["n"] == 1
    assert len(policy.calls[1]["questions"]) == 2  # both kept beams are finished in one call
    assert result.completion == PATHS[1]
    assert beam_shape(16, 4) == (4, 4) and beam_shape(2, 4) == (1, 2) and beam_shape(6, 4) == (1, 4)


def test_uct_selection_expansion_and_backpropagation():
    root = Node("<think>", 0, visits=4)
    strong = Node("a", 1, parent=root, visits=2, total_reward=1.8)
    rare = Node("b", 1, parent=root, visits=1, total_reward=0.0)
    root.children, root.expansions = [strong, rare], 2
    assert uct(strong, 4, 1.0) == pytest.approx(0.9 + math.sqrt(2))
    assert uct(rare, 4, 1.0) == pytest.approx(0.0 + 2.0)
    assert select(root, c=2.0, max_children=2, max_steps=5) is rare  # exploration wins at a large C
    assert select(root, c=1.0, max_children=2, max_steps=5) is strong
    assert select(root, c=1.0, max_children=3, max_steps=5) is root  # not fully expanded: grow the root
    assert uct(Node("new", 1), 4, 1.0) == math.inf
    leaf = expand(strong, cut_step("a", Continuation("a b.", 3, True), "."))
    assert expand(strong, cut_step("a", Continuation("a b. c", 5, True), ".")) is leaf  # same step joins
    assert strong.expansions == 2 and strong.children == [leaf]
    backpropagate(leaf, 1.0)
    assert (leaf.visits, strong.visits, root.visits) == (1, 3, 5)
    assert strong.total_reward == pytest.approx(2.8) and root.total_reward == pytest.approx(1.0)
    leaf.record("final", 1.0)
    assert final_answer(root) == "final"  # most visits: strong, then its only child


def test_mcts_finds_the_answer_the_first_sample_misses():
    policy = ScriptedPolicy({SUM.question: PATHS, DOUBLE.question: [FOUR]})
    grader = rule_grader()
    results = mcts([SUM, DOUBLE], policy, grader, simulations=4, c=0.5, max_children=2, step_delimiter=".",
                   max_steps=6, step_max_tokens=48, max_new_tokens=64)
    assert answer_of(results[0].completion) == "7" and answer_of(results[1].completion) == "4"
    # per simulation: one step call, then one rollout call for those not finished, both batched over problems
    assert policy.calls[0] == {"questions": [SUM.question, DOUBLE.question], "n": 1, "step": "."}
    assert policy.calls[1] == {"questions": [SUM.question], "n": 1, "step": None}  # DOUBLE's step finished it
    assert len(policy.calls) == 2 * 4 and grader.calls == [2, 2, 1, 1]
    # DOUBLE's tree: one finished child, replayed without generating once the root is fully expanded
    assert sum(q == DOUBLE.question for c in policy.calls for q in c["questions"]) == 2
    assert results[1].tokens == 2 * new_tokens([FOUR])
    assert [r.tokens for r in results] == [policy.generated[SUM.question], policy.generated[DOUBLE.question]]


def test_mcts_with_one_simulation_is_one_sample():
    policy = ScriptedPolicy({SUM.question: PATHS})
    [result] = mcts([SUM], policy, rule_grader(), simulations=1, c=1.0, max_children=3, step_delimiter=".",
                    max_steps=6, step_max_tokens=48, max_new_tokens=64)
    assert result.completion == PATHS[0] and result.tokens == new_tokens([PATHS[0]])


def test_evaluate_methods_table_and_report(tmp_path):
    cfg = SearchConfig(budgets=(1, 4), mcts_reward="rule", beam_expansions=2, step_delimiter=".")
    policy = ScriptedPolicy({SUM.question: PATHS, DOUBLE.question: [FOUR]})
    verifiers = {"orm": TableVerifier("orm", prm_score), "prm": TableVerifier("prm", prm_score), "rule": rule_grader()}
    ticks = iter(range(1000))
    rows = evaluate_methods([SUM, DOUBLE], policy, verifiers, rule_grader(), cfg, log=lambda *_: None,
                            clock=lambda: next(ticks))
    assert [(r["method"], r["budget"]) for r in rows] == [("greedy", 1)] + [
        (m, b) for m in ("maj", "bon", "wbon", "beam", "mcts") for b in (1, 4)]
    by = {(r["method"], r["budget"]): r for r in rows}
    assert by["greedy", 1]["accuracy"] == 0.5 and by["beam", 4]["accuracy"] == 1.0
    assert by["mcts", 4]["verifier"] == "rule (oracle)" and by["bon", 4]["verifier"] == "orm"
    assert by["maj", 4]["generated_tokens"] > by["maj", 1]["generated_tokens"] > 0
    assert all(r["wall_s"] == 1 and r["num_problems"] == 2 for r in rows)

    paths = write_report(rows, tmp_path / "out", "tiny")
    table = paths["markdown"].read_text()
    assert "| beam | 4 | prm | 100.0% |" in table and "oracle" in table
    with open(paths["csv"]) as f:
        assert len(list(csv.DictReader(f))) == len(rows)
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_per_task_accuracy_in_rows_and_report(tmp_path):
    sum_task, double_task = (dataclasses.replace(SUM, task="sums"), dataclasses.replace(DOUBLE, task="doubles"))
    policy = ScriptedPolicy({SUM.question: PATHS, DOUBLE.question: [FOUR]})
    rows = evaluate_methods([sum_task, double_task], policy, {}, rule_grader(), SearchConfig(methods=("greedy",)),
                            log=lambda *_: None)
    assert rows[0]["accuracy"] == 0.5 and rows[0]["task_accuracy"] == {"sums": 0.0, "doubles": 1.0}
    table = write_report(rows, tmp_path, "tiny")["markdown"].read_text()
    assert "| method | budget | sums | doubles |" in table and "| greedy | 1 | 0.0% | 100.0% |" in table
    assert "task_accuracy" not in evaluate_methods([SUM], policy, {}, rule_grader(), SearchConfig(methods=("greedy",)),
                                                   log=lambda *_: None)[0]  # one unnamed task: no per-task column


def test_search_takes_the_chosen_split_and_tasks_of_a_mixture():
    from rl_system.config import load_config
    from rl_system.search.evaluate import search_problems

    cfg = load_config("configs/r1_zero_mix.yaml", ["search.tasks=[chain_sum_3x2, basic_arithmetic]", "data.num_eval=8",
                                                   "data.num_train=20"])
    held_out = search_problems(cfg)
    assert len(held_out) == 16 and {p.task for p in held_out} == {"chain_sum_3x2", "basic_arithmetic"}
    train = search_problems(load_config("configs/r1_zero_mix.yaml", [
        "search.tasks=[basic_arithmetic]", "search.split=train", "search.num_problems=5", "data.num_eval=8",
        "data.num_train=20"]))
    assert len(train) == 5 and {p.task for p in train} == {"basic_arithmetic"}
    assert not {p.question for p in train} & {p.question for p in held_out}


def test_search_and_collect_sampling_settings_reach_the_rollout_workers():
    from rl_system.rollout import sampling_params

    cfg = load_config(None, ["rollout.temperature=0.9", "search.temperature=0.7", "search.top_p=0.8",
                             "search.top_k=20", "collect.temperature=0.5", "collect.top_k=5"])
    searching = sampling_for(cfg, cfg.search)  # what evaluate starts its rollout workers with
    params = sampling_params(searching, n=4)
    assert (params.temperature, params.top_p, params.top_k) == (0.7, 0.8, 20)
    assert sampling_params(searching, greedy=True).greedy  # greedy search stays greedy
    collecting = sampling_for(cfg, cfg.collect)  # what collect-samples starts its rollout workers with
    assert (collecting.rollout.temperature, collecting.rollout.top_p, collecting.rollout.top_k) == (0.5, 1.0, 5)
    assert (cfg.rollout.temperature, cfg.rollout.top_k) == (0.9, 0)  # training samples as it did


@pytest.mark.parametrize("overrides, message", [
    (["search.methods=[greedy, sampling]"], "config key 'search.methods': unknown method 'sampling'"),
    (["search.budgets=[1, 0]"], "config key 'search.budgets': expected a list of positive integers, got [1, 0]"),
    (["search.methods=[beam]", "search.prm_path=''"], "config key 'search.prm_path'"),
    (["search.mcts_reward=oracle"], "config key 'search.mcts_reward'"),
    (["search.temperature=0"], "config key 'search.temperature': expected a positive number, got 0.0"),
    (["search.top_p=1.5"], "config key 'search.top_p': expected a number in (0, 1], got 1.5"),
    (["search.top_k=-1"], "config key 'search.top_k': expected an integer >= 0 (0: off), got -1"),
    (["search.split=test"], "config key 'search.split': expected 'held_out' or 'train', got 'test'"),
    (["collect.temperature=-1"], "config key 'collect.temperature': expected a positive number, got -1.0"),
    (["rollout.top_k=-2"], "config key 'rollout.top_k': expected an integer >= 0 (0: off), got -2"),
])
def test_bad_search_config_is_one_line(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, overrides)
