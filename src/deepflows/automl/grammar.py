"""The update-rule grammar of Neural Optimizer Search (Bello et al. 2017), as text and as tokens.

A rule is a short program of `units`. Each unit is one line of the paper's grammar,

    o_k = b(u1(op1), u2(op2))

two operands, a unary function of each and a binary function joining them; an operand is a primitive (below) or
the output of an earlier unit (the paper's extension that lets rules nest). The last unit's output is the update
direction: the parameters move by -lr * o_last, so the rule `g` is plain gradient descent.

As tokens, a rule is an int array (units, 5): [op1, op2, u1, u2, b] per unit, op indices counting the OPERANDS
first and then the earlier units. As text, it is the expression the last unit computes, with identity and
keep-left dropped, e.g. `exp(sign(g)*sign(m))*g` (PowerSign) or `(1+sign(g)*sign(m))*g` (AddSign): readable,
parseable (`parse`), and canonical, so that token arrays that compute the same expression share one string (the
search caches results by it).

Primitives (running averages as Adam's, bias-corrected: m of g with beta 0.9, v of g^2 and y of g^3 with 0.999):
g, g^2, g^3, m, v, y, sign(g), sign(m), the constants 1 and 2, noise (Gaussian, variance 0.01, fresh each
step), 1e-4*w, 1e-3*w, 0.01*w, 0.1*w (weight decay terms), adam (m/(sqrt(v)+1e-8)), rmsprop (g/sqrt(v+1e-8)) and the
sign-decay schedules ld (linear), cd (cyclical) and rd (restart), which fall from 1 over the run.
Unary functions: identity, -x, exp(x), log(x) (= log(|x|+1e-8)), sqrt(x) (= sqrt(|x|)), clip(x,1e-5),
clip(x,1e-4), clip(x,1e-3) (to [-c, c]), drop(x,0.1), drop(x,0.3), drop(x,0.5) (dropout: zeroes each element with
that probability), sign(x). Binary functions: x+y, x-y, x*y, x/y (= x/(y+1e-8)), x^y, and keep-left (x).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from deepflows.errors import UserError

OPERANDS = ("g", "g^2", "g^3", "m", "v", "y", "sign(g)", "sign(m)", "1", "2", "noise",
            "1e-4*w", "1e-3*w", "0.01*w", "0.1*w", "adam", "rmsprop", "ld", "cd", "rd")  # fmt: skip
UNARY = ("id", "neg", "exp", "log", "sqrt", "clip5", "clip4", "clip3", "drop1", "drop3", "drop5", "sign")
BINARY = ("add", "sub", "mul", "div", "pow", "keep")
UNITS = 3  # the search's default: PowerSign needs 2 units, AddSign 3

# unary name -> (function name in text, extra argument)
_UNARY_TEXT = {"exp": ("exp", None), "log": ("log", None), "sqrt": ("sqrt", None), "sign": ("sign", None),
               "clip5": ("clip", 1e-5), "clip4": ("clip", 1e-4), "clip3": ("clip", 1e-3),
               "drop1": ("drop", 0.1), "drop3": ("drop", 0.3), "drop5": ("drop", 0.5)}  # fmt: skip
_BINARY_TEXT = {"add": "+", "sub": "-", "mul": "*", "div": "/", "pow": "^"}
_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2, "neg": 3, "^": 4}


class RuleError(UserError):
    """A rule's text or tokens that the grammar cannot express."""


# ----------------------------------------------------------------------------- expressions
# An expression is a tuple: ("name", str) | ("num", float) | ("neg", e) | ("call", fname, e[, float]) |
# ("bin", op, e, e).


def to_text(expr) -> str:
    """The canonical text of an expression (minimal parentheses)."""
    return _text(expr, 0)


def _text(expr, context: int) -> str:
    kind = expr[0]
    if kind == "name":
        return expr[1]
    if kind == "num":
        return _number(expr[1])
    if kind == "call":
        args = _text(expr[2], 0) + ("" if len(expr) == 3 else "," + _number(expr[3]))
        return f"{expr[1]}({args})"
    if kind == "neg":
        inner = _text(expr[1], _PRECEDENCE["neg"] + 1)
        text = "-" + inner
        return f"({text})" if context > _PRECEDENCE["neg"] else text
    op, left, right = expr[1], expr[2], expr[3]
    p = _PRECEDENCE[op]
    if op == "^":  # right-associative
        text = _text(left, p + 1) + op + _text(right, p)
    else:  # left-associative: a right operand of equal precedence needs parentheses (a-(b-c), a/(b*c))
        text = _text(left, p) + op + _text(right, p + 1 if right[0] != "neg" else _PRECEDENCE["neg"] + 1)
    return f"({text})" if context > p else text


def _number(value: float) -> str:
    if value >= 0.01:
        return f"{value:g}"
    return f"{value:.0e}".replace("e-0", "e-")


_TOKEN = re.compile(r"\s*(?:(\d+(?:\.\d*)?(?:e[-+]?\d+)?)|([a-z_][a-z0-9_]*)|(.))")


def parse_expression(text: str):
    """Text -> expression; precedence: ^ (right-assoc) > unary minus > * / > + -."""
    tokens = []
    for number, name, symbol in _TOKEN.findall(text.strip().lower()):
        tokens.append(("num", float(number)) if number else ("name", name) if name else ("sym", symbol))
    position = 0

    def peek():
        return tokens[position] if position < len(tokens) else ("end", None)

    def take(symbol=None):
        nonlocal position
        token = peek()
        if symbol is not None and token != ("sym", symbol):
            raise RuleError(f"rule {text!r}: expected {symbol!r} at token {position + 1}, found {token[1]!r}")
        position += 1
        return token

    def additive():
        expr = multiplicative()
        while peek() in (("sym", "+"), ("sym", "-")):
            expr = ("bin", take()[1], expr, multiplicative())
        return expr

    def multiplicative():
        expr = signed()
        while peek() in (("sym", "*"), ("sym", "/")):
            expr = ("bin", take()[1], expr, signed())
        return expr

    def signed():
        if peek() == ("sym", "-"):
            take()
            return ("neg", signed())
        return power()

    def power():
        base = atom()
        if peek() == ("sym", "^"):
            take()
            return ("bin", "^", base, signed())
        return base

    def atom():
        kind, value = take()
        if kind == "num":
            return ("num", value)
        if kind == "sym" and value == "(":
            expr = additive()
            take(")")
            return expr
        if kind == "name":
            if peek() != ("sym", "("):
                return ("name", value)
            take("(")
            arg = additive()
            extra = None
            if peek() == ("sym", ","):
                take()
                number = take()
                if number[0] != "num":
                    raise RuleError(f"rule {text!r}: {value}(x, c) needs a number for c")
                extra = number[1]
            take(")")
            return ("call", value, arg) if extra is None else ("call", value, arg, extra)
        raise RuleError(f"rule {text!r}: unexpected {value!r}" if kind != "end" else f"rule {text!r}: incomplete")

    if not tokens:
        raise RuleError("rule '': empty")
    expr = additive()
    if position != len(tokens):
        raise RuleError(f"rule {text!r}: unexpected {peek()[1]!r} after a complete expression")
    return expr


_OPERAND_AST = [parse_expression(text) for text in OPERANDS]
_OPERAND_EXPR = {expr: index for index, expr in enumerate(_OPERAND_AST)}
_UNARY_OF_CALL = {(fname, arg): name for name, (fname, arg) in _UNARY_TEXT.items()}


# ----------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class Rule:
    """A rule as tokens (units, 5); str(rule) is its canonical text."""

    tokens: tuple  # tuple of 5-tuples of ints, one per unit

    @property
    def array(self) -> np.ndarray:
        return np.asarray(self.tokens, dtype=np.int32)

    @property
    def units(self) -> int:
        return len(self.tokens)

    def expression(self):
        return _expression(self.tokens, len(self.tokens) - 1)

    def __str__(self) -> str:
        return to_text(self.expression())

    @classmethod
    def from_array(cls, array, *, validate: bool = True) -> "Rule":
        rule = cls(tuple(tuple(int(x) for x in row) for row in np.asarray(array)))
        if validate:
            check_tokens(rule.array)
        return rule


def check_tokens(array: np.ndarray) -> None:
    """Raise RuleError unless `array` is (units, 5) with every index in range for its unit."""
    if array.ndim != 2 or array.shape[1] != 5 or not len(array):
        raise RuleError(f"rule tokens: expected shape (units, 5), found {array.shape}")
    for k, (op1, op2, u1, u2, b) in enumerate(array):
        for op in (op1, op2):
            if not 0 <= op < len(OPERANDS) + k:
                raise RuleError(f"rule tokens: unit {k} operand {op} out of range (0..{len(OPERANDS) + k - 1})")
        for u in (u1, u2):
            if not 0 <= u < len(UNARY):
                raise RuleError(f"rule tokens: unit {k} unary {u} out of range")
        if not 0 <= b < len(BINARY):
            raise RuleError(f"rule tokens: unit {k} binary {b} out of range")


def _expression(tokens, unit: int):
    op1, op2, u1, u2, b = tokens[unit]

    def operand(index):
        if index < len(OPERANDS):
            return _OPERAND_AST[index]
        return _expression(tokens, index - len(OPERANDS))

    left = _apply(UNARY[u1], operand(op1))
    if BINARY[b] == "keep":
        return left
    return ("bin", _BINARY_TEXT[BINARY[b]], left, _apply(UNARY[u2], operand(op2)))


def _apply(unary: str, expr):
    if unary == "id":
        return expr
    if unary == "neg":
        return ("neg", expr)
    fname, arg = _UNARY_TEXT[unary]
    return ("call", fname, expr) if arg is None else ("call", fname, expr, arg)


def parse(text: str, units: int = UNITS) -> Rule:
    """Text -> the rule with `units` units that computes it (unused leading units are inert fillers)."""
    expr = parse_expression(text)
    emitted: list[list[int]] = []  # units with operand indices relative: ("unit", j) as -1 - j
    memo: dict = {}

    def base(e):
        index = _OPERAND_EXPR.get(e)
        if index is None and e[0] in ("name", "num"):
            what = f"operand {e[1]!r}" if e[0] == "name" else f"constant {_number(e[1])}"
            raise RuleError(f"rule {text!r}: unknown {what}: the operands are {', '.join(OPERANDS)}")
        return index

    def value(e):  # (operand, unary) such that unary(operand) == e
        if base(e) is not None:
            return base(e), 0
        if e[0] == "neg":
            return as_operand(e[1]), UNARY.index("neg")
        if e[0] == "call":
            key = (e[1], e[3] if len(e) == 4 else None)
            if key not in _UNARY_OF_CALL:
                raise RuleError(f"rule {text!r}: unknown function {e[1]}{'' if key[1] is None else f'(x,{key[1]:g})'}"
                                f": the functions are exp, log, sqrt, sign, clip(x,1e-5|1e-4|1e-3), "
                                f"drop(x,0.1|0.3|0.5)")
            return as_operand(e[2]), UNARY.index(_UNARY_OF_CALL[key])
        return as_operand(e), 0

    def as_operand(e):
        if base(e) is not None:
            return base(e)
        if e in memo:
            return memo[e]
        if e[0] == "bin":
            (o1, v1), (o2, v2) = value(e[2]), value(e[3])
            emitted.append([o1, o2, v1, v2, list(_BINARY_TEXT.values()).index(e[1])])
        else:
            o, v = value(e)
            emitted.append([o, 0, v, 0, BINARY.index("keep")])
        memo[e] = -len(emitted)
        return memo[e]

    if base(expr) is not None or expr[0] in ("neg", "call"):
        o, v = value(expr)
        emitted.append([o, 0, v, 0, BINARY.index("keep")])
    else:
        as_operand(expr)
    if len(emitted) > units:
        raise RuleError(f"rule {text!r}: needs {len(emitted)} units, the grammar has {units}")
    pad = units - len(emitted)
    rows = [[0, 0, 0, 0, BINARY.index("keep")] for _ in range(pad)]
    for row in emitted:  # relative unit references (-1 - j) -> absolute operand indices
        rows.append([len(OPERANDS) + pad + (-1 - x) if x < 0 else x for x in row[:2]] + row[2:])
    return Rule.from_array(rows)


def sample(rng: np.random.Generator, units: int = UNITS) -> Rule:
    """A rule with every token drawn uniformly from what the grammar allows at its place."""
    rows = [[rng.integers(len(OPERANDS) + k), rng.integers(len(OPERANDS) + k), rng.integers(len(UNARY)),
             rng.integers(len(UNARY)), rng.integers(len(BINARY))] for k in range(units)]  # fmt: skip
    return Rule.from_array(rows)


def choices(units: int = UNITS) -> list[int]:
    """How many values each token position takes, in order (the controller's and the mutation's alphabet)."""
    return [n for k in range(units) for n in (len(OPERANDS) + k,) * 2 + (len(UNARY),) * 2 + (len(BINARY),)]
