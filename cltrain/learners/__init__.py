"""Continual-learning methods, one file each, registered by name for `learner.name`."""
from cltrain.learners import ewc, finetune, joint, l2m, l2p, merge, si  # noqa: F401  (registration)
from cltrain.learners.base import LEARNERS, Learner

__all__ = ["LEARNERS", "Learner"]
from cltrain.learners import tame  # noqa: F401,E402  (registration)
from cltrain.learners import ibcl, preference  # noqa: F401,E402  (registration)
