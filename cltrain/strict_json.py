"""JSON that every parser reads. Python's json writes bare NaN / Infinity, which JSON does not have (jq, JS,
pandas' strict modes refuse them), so every JSON file of a run folder goes through `dumps` here."""
from __future__ import annotations

import json
import math
from typing import Any


def dumps(data: Any, **kwargs: Any) -> str:
    """`json.dumps` with NaN and +-Infinity written as null, numpy / torch numbers and arrays as plain ones."""
    return json.dumps(finite(data), allow_nan=False, **kwargs)


def finite(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: finite(v) for key, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    if isinstance(value, float):  # numpy's float64 too
        return value if math.isfinite(value) else None
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy / torch scalars and arrays
        return finite(value.tolist())
    return value


def loads(text: str) -> Any:
    """Strict reading: refuses NaN / Infinity (what `dumps` never writes)."""
    def refuse(name: str) -> Any:
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)
