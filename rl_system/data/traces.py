"""Cold-start reasoning traces written by code from the problem (DeepSeek-R1's cold start without a
bigger model): the arithmetic worked step by step in the `<think>` / `<answer>` format.

An expression of + - * is worked left to right after its products, as running partial sums; each
operation on numbers of two or more digits is written out column by column, ones first, with its
carries and borrows. A negative running total is handled as a sign and a magnitude. E.g.

    <think> 57 + 87: 7+7=14, write 4 carry 1; 5+8+1=14; so 144. 144 + 70: ...; so 214. </think> <answer>214</answer>
"""
from __future__ import annotations

import json
import re

from rl_system.data.problem import Problem
from rl_system.data.prompts import chat_messages

TRACED_TASKS = ("chain_sum", "basic_arithmetic")
TOKEN = re.compile(r"\s*(\d+|[-+*])")


def trace(problem: Problem) -> str | None:
    """The worked completion of a chain_sum or basic_arithmetic problem (the prefilled `<think>`
    included, as a rollout's completion is); None for any other task or an expression outside
    integers joined by + - * (division, parentheses) or whose value is not the problem's answer."""
    if problem.columns.get("task") not in TRACED_TASKS:
        return None
    expression = json.loads(problem.columns.get("metadata") or "{}").get("expression", "")
    tokens = _tokens(expression)
    if tokens is None:
        return None
    steps, terms = _products(tokens)
    total = terms[0][1]
    for sign, value in terms[1:]:
        step, total = _signed_step(total, sign, value)
        steps.append(step)
    if len(terms) == 1:
        steps.append(f"The value is {total}.")
    if str(total) != problem.answer.strip():  # reasoning-gym's own reference disagrees (e.g. its precedence)
        return None
    return f"<think> {' '.join(steps)} </think> <answer>{total}</answer>"


def trace_rows(problems: list[Problem], system_prompt: str = "") -> list[dict]:
    """SFT chat rows (the `sft` command's format) of the problems that have a trace."""
    rows = []
    for problem in problems:
        completion = trace(problem)
        if completion is not None:
            rows.append({"messages": [*chat_messages(problem.prompt, system_prompt),
                                      {"role": "assistant", "content": completion}],
                         "question": problem.question, "answer": problem.answer, "completion": completion,
                         "task": problem.task, "source": "trace"})
    return rows


def _tokens(expression: str) -> list[str] | None:
    tokens, end = [], 0
    for match in TOKEN.finditer(expression):
        if match.start() != end:
            return None
        tokens.append(match.group(1))
        end = match.end()
    numbers_at_even = all(t.isdigit() == (i % 2 == 0) for i, t in enumerate(tokens))
    if end != len(expression.rstrip()) or not tokens or len(tokens) % 2 == 0 or not numbers_at_even:
        return None
    return tokens


def _products(tokens: list[str]) -> tuple[list[str], list[tuple[str, int]]]:
    """Steps of the products (worked first), and the (sign, number) terms left, the first one's sign '+'."""
    steps, terms = [], [("+", int(tokens[0]))]
    for op, number in zip(tokens[1::2], tokens[2::2]):
        if op == "*":
            sign, last = terms[-1]
            terms[-1] = (sign, last * int(number))
            steps.append(f"{last} * {number} = {terms[-1][1]}.")
        else:
            terms.append((op, int(number)))
    return steps, terms


def _signed_step(total: int, sign: str, value: int) -> tuple[str, int]:
    """One step of the running total: the sign rule that turns it into magnitudes, then their column work."""
    head = f"{total} {sign} {value}"
    if total >= 0 and sign == "+":
        how, work = "", _add(total, value)
    elif total >= 0 and total >= value:
        how, work = "", _subtract(total, value)
    elif total >= 0:
        how, work = f" = -({value} - {total})", _subtract(value, total)
    elif sign == "-":
        how, work = f" = -({-total} + {value})", _add(-total, value)
    elif value >= -total:
        how, work = f" = {value} - {-total}", _subtract(value, -total)
    else:
        how, work = f" = -({-total} - {value})", _subtract(-total, value)
    result = total + value if sign == "+" else total - value
    return f"{head}{how}: {work} so {result}.", result


def _digits(n: int, width: int) -> list[int]:
    """Digits of n, ones first, padded with zeros to `width`."""
    return [int(d) for d in str(n).zfill(width)[::-1]]


def _add(a: int, b: int) -> str:
    """a + b column by column, ones first; the last column is written whole."""
    width = max(len(str(a)), len(str(b)))
    parts, carry = [], 0
    for i, (x, y) in enumerate(zip(_digits(a, width), _digits(b, width))):
        column = x + y + carry
        parts.append(f"{x}+{y}" + ("+1" if carry else "") + f"={column}")
        carry = column // 10
        if carry and i < width - 1:
            parts[-1] += " carry 1"
    return "; ".join(parts) + ";"


def _subtract(a: int, b: int) -> str:
    """a - b for a >= b >= 0, column by column, ones first; a borrowed column shows its 10 added."""
    width = len(str(a))
    parts, borrow = [], 0
    for x, y in zip(_digits(a, width), _digits(b, width)):
        top = x - borrow
        text = f"{x}-1" if borrow else f"{x}"
        borrow = int(top < y)
        parts.append(f"1{top}-{y}={top + 10 - y} borrow 1" if borrow else f"{text}-{y}={top - y}")
    return "; ".join(parts) + ";"
