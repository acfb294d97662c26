"""What a PromQL expression reads: its metric selectors (name and label matchers), enough to
check a dashboard's and the alert rules' queries against a real ``/metrics``."""

from __future__ import annotations

import re
from dataclasses import dataclass

KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
OPERATORS = frozenset({"and", "or", "unless", "bool", "offset"})
AGGREGATIONS = frozenset(
    {
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    }
)
SYNTHETIC = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})
"""Series Prometheus adds to every scrape itself."""

_TOKEN = re.compile(
    r'"(?:[^"\\]|\\.)*"'  # a string
    r"|\[[^\]]*\]"  # a range or subquery
    r"|[A-Za-z_:][A-Za-z0-9_:]*"  # an identifier
    r"|[(){},]"
    r"|\S"
)
_MATCHER = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*,?')


@dataclass(frozen=True)
class Selector:
    """``name{label op "value", ...}`` as read from an expression."""

    name: str
    matchers: tuple[tuple[str, str, str], ...]


def selectors(expr: str) -> list[Selector]:
    """The metric selectors of ``expr``: not functions, not the labels of ``by (...)`` and the like."""
    tokens = _TOKEN.findall(expr)
    found: list[Selector] = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        following = tokens[index + 1] if index + 1 < len(tokens) else ""
        if token in KEYWORDS and following == "(":
            index = tokens.index(")", index) + 1  # label names, not metrics
            continue
        if (
            re.fullmatch(r"[A-Za-z_:][A-Za-z0-9_:]*", token)
            and token not in OPERATORS | AGGREGATIONS
            and following != "("
        ):
            matchers: tuple[tuple[str, str, str], ...] = ()
            if following == "{":
                end = tokens.index("}", index)
                matchers = _matchers("".join(tokens[index + 2 : end]))
                index = end
            found.append(Selector(token, matchers))
        index += 1
    return found


def _matchers(text: str) -> tuple[tuple[str, str, str], ...]:
    """``label="value", ...`` (the tokens joined back without spaces: strings are whole tokens)."""
    text = text.replace('",', '" ,')
    matchers = []
    position = 0
    while position < len(text):
        match = _MATCHER.match(text, position)
        if match is None:
            raise ValueError(f"cannot read the label matchers {text!r}")
        matchers.append((match.group(1), match.group(2), match.group(3)))
        position = match.end()
    return tuple(matchers)
