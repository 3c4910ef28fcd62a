"""Task arithmetic (Ilharco et al., 2023): the sum of the task vectors, scaled by one coefficient lam."""
from cltrain.merging.base import MERGERS, Merger, Vector, stack, unstack


@MERGERS.register("task_arithmetic")
class TaskArithmetic(Merger):
    def merge(self, vectors: list[Vector]) -> Vector:
        rows, layout = stack(vectors)
        return unstack(rows.sum(0), layout)
