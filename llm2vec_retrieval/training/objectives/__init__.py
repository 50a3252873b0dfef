"""Training objectives, one file per stage; the loop (`trainer.py`) knows none of them.

`objective_for(cfg)` builds the objective registered for `cfg.stage`. A new stage is a
`TrainConfig` subclass with its own `stage` name plus an `Objective` subclass decorated with
`register_objective` (see `base.py` for what the loop calls and when).
"""

from __future__ import annotations

from .base import OBJECTIVES, MicroStep, Objective, objective_for, register_objective
from .contrastive import ContrastiveObjective, Groups
from .mntp import MNTPObjective
from .simcse import SimCSEObjective
from .supervised import SupervisedObjective

__all__ = [
    "OBJECTIVES",
    "ContrastiveObjective",
    "Groups",
    "MNTPObjective",
    "MicroStep",
    "Objective",
    "SimCSEObjective",
    "SupervisedObjective",
    "objective_for",
    "register_objective",
]
