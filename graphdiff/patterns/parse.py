"""Parse a pattern expression such as ``"Window(64) | Global(2) | Random(3, seed=1)"``.

Used by the command line (``--pattern``). Only pattern constructors, presets, literal
arguments, ``|``, ``&``, ``.causal()`` and ``.symmetric()`` are accepted: the text is walked as
a syntax tree, never passed to ``eval``.
"""

from __future__ import annotations

import ast
from typing import Any, Callable, Dict

from graphdiff.patterns.base import Pattern
from graphdiff.patterns.blocks import (
    BlockRandom,
    BlockWindow,
    Full,
    Global,
    Random,
    Strided,
    Window,
)
from graphdiff.patterns.presets import PATTERN_PRESETS

CONSTRUCTORS: Dict[str, Callable[..., Pattern]] = {
    "Window": Window,
    "BlockWindow": BlockWindow,
    "Global": Global,
    "Random": Random,
    "BlockRandom": BlockRandom,
    "Strided": Strided,
    "Full": Full,
    **PATTERN_PRESETS,
}
METHODS = ("causal", "symmetric")


def parse_pattern(text: str) -> Pattern:
    """Build the pattern that ``text`` describes; a bare preset name means its defaults.

    Raises:
        ValueError: on syntax errors, unknown names or arguments, naming what is allowed.
    """
    if not isinstance(text, str):
        raise TypeError(f"pattern expression must be a string, got {type(text).__name__}")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as error:
        raise ValueError(f"cannot parse pattern {text!r}: {error.msg}") from None
    return _build(tree.body, text)


def _fail(text: str, why: str) -> ValueError:
    return ValueError(f"invalid pattern {text!r}: {why}. Valid names: {', '.join(CONSTRUCTORS)}")


def _literal(node: ast.AST, text: str) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError):  # TypeError: an unhashable key, as in {[1]: 2}
        raise _fail(text, f"arguments must be literals, got {ast.unparse(node)!r}") from None


def _build(node: ast.AST, text: str) -> Pattern:
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.BitOr, ast.BitAnd)):
        left, right = _build(node.left, text), _build(node.right, text)
        return left | right if isinstance(node.op, ast.BitOr) else left & right
    if isinstance(node, ast.Name):
        if node.id not in CONSTRUCTORS:
            raise _fail(text, f"unknown name {node.id!r}")
        return _construct(node.id, [], {}, text)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        if node.func.attr not in METHODS or node.args or node.keywords:
            raise _fail(
                text, f"only .causal() and .symmetric() may follow a pattern, got .{node.func.attr}"
            )
        return getattr(_build(node.func.value, text), node.func.attr)()
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        if node.func.id not in CONSTRUCTORS:
            raise _fail(text, f"unknown name {node.func.id!r}")
        if any(kw.arg is None for kw in node.keywords):
            raise _fail(text, "arguments must be written out, not unpacked with **")
        args = [_literal(arg, text) for arg in node.args]
        kwargs = {kw.arg: _literal(kw.value, text) for kw in node.keywords}
        return _construct(node.func.id, args, kwargs, text)
    raise _fail(text, f"unsupported syntax {ast.unparse(node)!r}")


def _construct(name: str, args: list, kwargs: dict, text: str) -> Pattern:
    try:
        return CONSTRUCTORS[name](*args, **kwargs)
    except TypeError as error:  # a missing or unknown argument
        raise _fail(text, str(error)) from None
