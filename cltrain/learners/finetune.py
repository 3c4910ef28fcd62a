"""Fine-tuning (naive sequential training): the lower bound every method is compared with."""
from cltrain.learners.base import LEARNERS, Learner


@LEARNERS.register("finetune")
class Finetune(Learner):
    """Plain SGD on whatever the stream presents; no protection against forgetting."""
