"""Joint training: every phase trains on all tasks met so far (the usual upper bound)."""
from cltrain.learners.base import LEARNERS, Learner


@LEARNERS.register("joint")
class Joint(Learner):
    """Fine-tuning in the `joint` environment: the trainer feeds it all data seen so far each phase."""

    schedule = "joint"
