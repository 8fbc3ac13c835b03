"""Monte-Carlo tree search over reasoning steps.

A node is a partial answer (the root is the prefill); its children extend it by one sampled step.
One simulation, run for every problem at once:
  selection        from the root, while a node is fully expanded (it has had `max_children`
                   expansion attempts), go to the child with the largest
                   total_reward / visits + C * sqrt(parent_visits / visits);
  expansion        sample one step from the selected node (one policy call for all problems); a
                   step equal to an existing child's joins that child;
  rollout          write the new node's answer to the end (one policy call for all problems);
  evaluation       the verifier (or the rule grader) scores the finished answer (one call);
  backpropagation  every node on the path gains a visit and the reward.
A node that finished the answer, or sits `max_steps` steps deep, is terminal: selecting it again
replays its reward without generating. The final answer follows the most visited child from the
root down to a leaf and takes the best answer written from there.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from rl_system.data import Problem
from rl_system.search.base import Policy, Request, SearchResult, Step, Verifier, cut_step


@dataclass(eq=False)
class Node:
    text: str  # the partial answer
    depth: int  # steps below the root
    finished: bool = False
    parent: Node | None = None
    children: list[Node] = field(default_factory=list)
    expansions: int = 0  # expansion attempts made from this node
    visits: int = 0
    total_reward: float = 0.0
    answer: str = ""  # the best-scored complete answer reached from this node
    answer_reward: float = -math.inf

    def record(self, answer: str, reward: float) -> None:
        if reward > self.answer_reward:
            self.answer, self.answer_reward = answer, reward


def uct(child: Node, parent_visits: int, c: float) -> float:
    if child.visits == 0:
        return math.inf
    return child.total_reward / child.visits + c * math.sqrt(parent_visits / child.visits)


def select(root: Node, c: float, max_children: int, max_steps: int) -> Node:
    node = root
    while node.expansions >= max_children and node.children and not is_terminal(node, max_steps):
        node = max(node.children, key=lambda child: uct(child, node.visits, c))
    return node


def is_terminal(node: Node, max_steps: int) -> bool:
    return node.finished or node.depth >= max_steps


def expand(node: Node, step: Step) -> Node:
    node.expansions += 1
    for child in node.children:
        if child.text == step.text:
            return child
    child = Node(step.text, node.depth + 1, step.finished, parent=node)
    node.children.append(child)
    return child


def backpropagate(node: Node | None, reward: float) -> None:
    while node is not None:
        node.visits += 1
        node.total_reward += reward
        node = node.parent


def final_answer(root: Node) -> str:
    node = root
    while node.children:
        node = max(node.children, key=lambda child: (child.visits, child.total_reward / max(child.visits, 1)))
    return node.answer


def mcts(problems: list[Problem], policy: Policy, verifier: Verifier, simulations: int, c: float, max_children: int,
         step_delimiter: str, max_steps: int, step_max_tokens: int, max_new_tokens: int) -> list[SearchResult]:
    roots = [Node(policy.prefill, 0) for _ in problems]
    tokens = [0] * len(problems)
    for _ in range(simulations):
        leaves = [select(root, c, max_children, max_steps) for root in roots]
        for leaf in leaves:
            if is_terminal(leaf, max_steps):  # nothing left to generate below it: replay its reward
                backpropagate(leaf, leaf.answer_reward)
        growing = [i for i, leaf in enumerate(leaves) if not is_terminal(leaf, max_steps)]
        if not growing:
            continue

        new_nodes: dict[int, Node] = {}
        steps = policy.sample([Request(problems[i], leaves[i].text) for i in growing], 1, step_max_tokens,
                              step_delimiter)
        for i, [continuation] in zip(growing, steps):
            tokens[i] += continuation.tokens
            new_nodes[i] = expand(leaves[i], cut_step(leaves[i].text, continuation, step_delimiter))

        answers = {i: new_nodes[i].text for i in growing}
        unfinished = [i for i in growing if not new_nodes[i].finished]
        if unfinished:
            rollouts = policy.sample([Request(problems[i], new_nodes[i].text) for i in unfinished], 1, max_new_tokens)
            for i, [continuation] in zip(unfinished, rollouts):
                tokens[i] += continuation.tokens
                answers[i] = continuation.text

        rewards = verifier.score([problems[i] for i in growing], [answers[i] for i in growing])
        for i, reward in zip(growing, rewards):
            new_nodes[i].record(answers[i], reward)
            backpropagate(new_nodes[i], reward)
    return [SearchResult(final_answer(root), n) for root, n in zip(roots, tokens)]
