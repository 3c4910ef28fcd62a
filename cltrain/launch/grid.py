"""Grid expansion: `key=a,b other=x,y` -> one override list per point, each with its own run folder name."""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from cltrain.errors import ConfigError


@dataclass
class Point:
    name: str
    overrides: list[str]


def split_values(value: str) -> list[str]:
    """Split on commas outside brackets/quotes, so `model.hidden=[100,100],[400,400]` is two values."""
    parts, depth, quote, current = [], 0, "", []
    for ch in value:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    return [p.strip() for p in parts]


def axes(overrides: list[str]) -> list[tuple[str, list[str]]]:
    out = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"sweep override {item!r} is not key=value[,value...] (e.g. seed=0,1,2)")
        key, value = item.split("=", 1)
        values = split_values(value)
        if any(v == "" for v in values):
            raise ConfigError(f"sweep override {item!r} has an empty value")
        before = next((vs for k, vs in out if k == key), None)
        # a later single value overrides an earlier one, as in `cltrain fit`; a swept key set twice would have
        # its last setting silently win on every point
        if before is not None and (len(before) > 1 or len(values) > 1):
            raise ConfigError(f"sweep override {item!r} sets the swept key {key!r} again; give it once, its values "
                              "comma-separated (e.g. seed=0,1,2)")
        out = [(k, vs) for k, vs in out if k != key] + [(key, values)]
    return out


def point_name(pairs: list[tuple[str, str]]) -> str:
    tidy = lambda v: v.replace("[", "").replace("]", "").replace(", ", "x").replace(",", "x")  # noqa: E731
    raw = "__".join(f"{k}={tidy(v)}" for k, v in pairs) or "default"
    return re.sub(r"[^A-Za-z0-9._=+-]", "-", raw)


def expand(overrides: list[str]) -> list[Point]:
    """The full grid; only the swept keys (more than one value) name the folders."""
    grid = axes(overrides)
    swept = {k for k, values in grid if len(values) > 1}
    points = []
    for combo in itertools.product(*[[(k, v) for v in values] for k, values in grid]):
        points.append(Point(point_name([(k, v) for k, v in combo if k in swept]), [f"{k}={v}" for k, v in combo]))
    names = [p.name for p in points]
    if len(set(names)) != len(names):
        raise ConfigError("two sweep points would share a run folder; give each swept key distinct values")
    return points
