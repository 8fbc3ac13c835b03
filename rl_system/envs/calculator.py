"""The `calculator` tool: arithmetic on numbers, evaluated by walking Python's syntax tree.

Model output is never passed to eval/exec. The expression is parsed with `ast.parse` and only a
whitelist of nodes is evaluated: int and float literals, + - * / // % **, unary + and -, and
parentheses (which leave no node of their own). Names, calls, attributes, subscripts,
comparisons, strings and everything else are refused with a message the model can read.

Limits keep one call cheap: the expression's length, and the size of every intermediate result
(checked before a power is computed, so `9**9**9` is refused at once rather than computed).
Every failure is a `CalculatorError` with a short message; `calculate` turns it into text.
"""
from __future__ import annotations

import ast
import math
import operator

from rl_system.envs.base import ToolEnvironment

MAX_EXPRESSION_CHARS = 200
MAX_DIGITS = 100  # |result| < 10**100 for every intermediate value
MAX_ABS = 10**MAX_DIGITS

BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
          ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
# What a refused node is called in the message, for the common mistakes.
REFUSED = {ast.Name: "names", ast.Call: "function calls", ast.Attribute: "attributes", ast.Subscript: "subscripts",
           ast.Compare: "comparisons", ast.BoolOp: "and/or", ast.Lambda: "lambdas", ast.Tuple: "tuples (commas)",
           ast.List: "lists", ast.Dict: "dicts", ast.Set: "sets", ast.IfExp: "if-expressions",
           ast.JoinedStr: "f-strings", ast.NamedExpr: ":="}


class CalculatorError(ValueError):
    """An expression the calculator refuses or cannot compute; the message is shown to the model."""


def evaluate(expression: str) -> int | float:
    """The value of an arithmetic expression, or CalculatorError."""
    expression = expression.strip().removesuffix("=").strip()  # "3+4=" is a common way to ask
    if not expression:
        raise CalculatorError("empty expression")
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise CalculatorError(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(expression, mode="eval")
    except (SyntaxError, ValueError):  # ValueError: a null byte in the source
        hint = " (use ** for powers)" if "^" in expression else ""
        raise CalculatorError(f"invalid expression{hint}") from None
    except (RecursionError, MemoryError):
        raise CalculatorError("expression nested too deeply") from None
    try:
        return _eval(tree.body)
    except RecursionError:
        raise CalculatorError("expression nested too deeply") from None


def _eval(node: ast.AST) -> int | float:
    if isinstance(node, ast.Constant):
        value = node.value
        if type(value) not in (int, float):  # bool is an int subclass: refused by the exact type check
            raise CalculatorError(f"only numbers are allowed, not {type(value).__name__} {value!r}"[:120])
        return _checked(value)
    if isinstance(node, ast.UnaryOp) and type(node.op) in UNARY:
        return _checked(UNARY[type(node.op)](_eval(node.operand)))
    if isinstance(node, ast.BinOp) and type(node.op) in BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow):
            _check_power(left, right)
        try:
            result = BINARY[type(node.op)](left, right)
        except ZeroDivisionError:
            raise CalculatorError("division by zero") from None
        except OverflowError:
            raise CalculatorError("result too large") from None
        return _checked(result)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitXor):
        raise CalculatorError("'^' is not supported (use ** for powers)")
    what = REFUSED.get(type(node), f"'{type(node).__name__}'")
    raise CalculatorError(f"{what} not allowed: only numbers, + - * / // % ** and parentheses")


def _check_power(base: int | float, exponent: int | float) -> None:
    """Refuse a power whose result would exceed the limit, before computing it."""
    if base == 0 or abs(base) == 1:  # 0, 1 or -1 (0 to a negative power: division by zero later)
        return
    if exponent * math.log10(abs(base)) >= MAX_DIGITS:
        raise CalculatorError(f"result too large (limit 10**{MAX_DIGITS})")


def _checked(value) -> int | float:
    if isinstance(value, complex):  # (-8) ** 0.5
        raise CalculatorError("result is not a real number")
    if isinstance(value, float) and not math.isfinite(value):
        raise CalculatorError("result too large")
    if abs(value) >= MAX_ABS:
        raise CalculatorError(f"result too large (limit 10**{MAX_DIGITS})")
    return value


def format_number(value: int | float) -> str:
    """Integers as integers (6/3 -> 2), other floats to 12 significant digits (0.1+0.2 -> 0.3)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.12g}"
    return str(value)


def calculate(expression: str) -> tuple[str, bool]:
    """The calculator's reply to a call: (text, is_error). Never raises for any input string."""
    try:
        return format_number(evaluate(expression)), False
    except CalculatorError as e:
        return f"error: {e}", True


class CalculatorEnv(ToolEnvironment):
    """`env.name: calculator`: the model writes `<tool>12*(3+4)</tool>` and reads `<result>84</result>`."""

    def run_tool(self, call: str) -> tuple[str, bool]:
        return calculate(call)
