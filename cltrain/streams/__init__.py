"""Task streams. Importing this package registers every stream family and rehearsal schedule."""
from cltrain.streams import binary, metaworld, permuted, rotated, schedules, split  # noqa: F401  (registration)
from cltrain.streams.base import STREAMS, Stream, Task
from cltrain.streams.loader import Batch, PhaseLoader, Segment

__all__ = ["STREAMS", "Stream", "Task", "Batch", "PhaseLoader", "Segment"]
