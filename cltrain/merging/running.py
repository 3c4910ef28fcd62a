"""Running (sequential) averaging: the continual merger. After task k the merged vector is the mean of the k
task vectors seen so far, updated in place as m_k = m_{k-1} + (tau_k - m_{k-1}) / k, so between tasks only
m and k are kept: memory does not grow with the number of tasks (tests/test_merging.py checks it)."""
from typing import Any, Optional

from cltrain.merging.base import MERGERS, Merger, Vector


@MERGERS.register("running_average")
class RunningAverage(Merger):
    streaming = True

    def fold(self, state: Optional[dict[str, Any]], vector: Vector) -> dict[str, Any]:
        if state is None:
            return {"merged": {k: v.clone() for k, v in vector.items()}, "count": 1}
        k = state["count"] + 1
        for name, m in state["merged"].items():
            m.add_(vector[name] - m, alpha=1.0 / k)
        return {"merged": state["merged"], "count": k}

    def merge(self, vectors: list[Vector]) -> Vector:
        state = None
        for v in vectors:
            state = self.fold(state, v)
        return self.folded(state)
