"""Weight averaging (Wortsman et al., 2022, "model soups"): the mean of the experts' weights.

As a task vector: the mean of the task vectors, so `base + 1.0 * merged` is the plain average of the models.
"""
from cltrain.merging.base import MERGERS, Merger, Vector, stack, unstack


@MERGERS.register("average")
class Average(Merger):
    def merge(self, vectors: list[Vector]) -> Vector:
        rows, layout = stack(vectors)
        return unstack(rows.mean(0), layout)
