"""What every stage is given: the config, the run folder, its questions, the model (loaded on first use)
and the run's loggers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from starloop.config import Config
from starloop.policy import Policy
from starloop.records import Question


@dataclass
class Run:
    cfg: Config
    out: Path
    # {"train": questions sampled for training, "val": questions validated on}
    questions: dict[str, list[Question]]
    loaded: Policy | None = None
    # The run's loggers (starloop.loggers.RunLogger); None logs nothing beyond the run folder.
    logger: object | None = None
    by_id: dict[str, Question] = field(init=False)

    def __post_init__(self) -> None:
        self.by_id = {q.id: q for q in self.questions["train"]}

    @property
    def policy(self) -> Policy:
        """The model, loaded the first time a stage needs it (a stage whose output exists loads nothing)."""
        if self.loaded is None:
            self.loaded = Policy(self.cfg)
        return self.loaded

    def iter(self, k: int) -> Path:
        return self.out / f"iter_{k}"

    def adapter(self, k: int) -> Path | None:
        """The adapter trained in iteration k (None for iteration 0: the base model)."""
        return self.iter(k) / "train" / "adapter" if k >= 1 else None

