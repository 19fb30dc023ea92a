"""What a training strategy is: how scored samples become training data and units, and a batch loss.

A strategy is one module in this package: a `Strategy` subclass (its name, its config dataclass, how it
builds training data from scored samples, how it tokenizes that data into units, an optional preparation
before training, and its batch loss calling the pure functions of `starloop.losses`), plus one line in the
registry (`strategies/__init__.py`). Nothing outside this package branches on a strategy's name.

A config dataclass's fields are keys of the `trainer` group (`trainer.dpo_beta`): `config.TrainerConfig`
inherits every registered strategy's dataclass, so each default still has exactly one home.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from starloop import losses
from starloop.build import Example
from starloop.train import StepTotals, Unit, logps, tokenize_pair

if TYPE_CHECKING:
    from starloop.config import TrainerConfig


@dataclass
class TrainContext:
    """What `Strategy.prepare` may use: the iteration's policy (base + adapters), the model about to be
    trained, its units (and validation units), the previous iteration's adapter, and the LoRA seed."""

    policy: Any
    model: Any
    units: list[Unit]
    val_units: list[Unit] | None
    prev_adapter: Any
    seed: int
    progress: bool = True


class Strategy:
    name: ClassVar[str] = ""
    # Its config dataclass (fields become trainer.<field>), with choices and ranges of its keys.
    config: ClassVar[type | None] = None
    choices: ClassVar[dict[str, tuple[str, ...]]] = {}
    ranges: ClassVar[dict[str, tuple[float | None, float | None]]] = {}
    record: ClassVar[type] = Example  # what train_data.jsonl holds
    min_samples: ClassVar[int] = 1  # samples per question it needs (without preloaded data)
    imitates: ClassVar[bool] = False  # trains towards correct samples only (sft, dpo's chosen side)
    headline: ClassVar[dict[str, str]] = {}  # its keys worth showing beside lr in reports: key -> label

    def positive_weight_on_wrong(self, data: Sequence, t: TrainerConfig) -> float | None:
        """Share of the training weight on wrong answers (reward strategies; None for the others)."""
        return None

    def reward_columns(self, t: TrainerConfig) -> set[str]:
        """Reward columns (scored by the model) its training data needs."""
        return set()

    def build(self, samples, t: TrainerConfig) -> list:
        raise NotImplementedError

    def units(self, tok, data: Sequence, t: TrainerConfig) -> list[Unit]:
        """One unit per training example: prompt and completion ids (EOS only if the sample ended)."""
        return [Unit(*tokenize_pair(tok, e.prompt, e.completion, e.eos), source=e.group) for e in data]

    def prepare(self, ctx: TrainContext):
        """Work before the first step (DPO: reference log-probs); returns the model to train."""
        return ctx.model

    def pre_train(self, model, tok, units: list[Unit], t: TrainerConfig, seed: int, progress: bool) -> list[dict]:
        """Optional training before the main loop (DPO's SFT warm-up); returns its step records."""
        return []

    def batch_loss(self, model, tok, units: Sequence[Unit], t: TrainerConfig, totals: StepTotals):
        """(this micro-batch's share of the step's loss, metrics as micro-batch means)."""
        raise NotImplementedError

    def train_context(self, model, t: TrainerConfig) -> contextlib.AbstractContextManager:
        """Held around the whole training loop, forward and backward passes alike (DPO: dropout off, which
        must hold in backward too, where gradient checkpointing recomputes the forward)."""
        return contextlib.nullcontext()


class RewardStrategy(Strategy):
    """A strategy trained on every on-policy sample with a per-sample coefficient computed over the whole
    iteration first (so that a micro-batch never splits a question's group): `coefficients`."""

    def reward_columns(self, t: TrainerConfig) -> set[str]:
        return {t.reward} if t.reward != "correct" else set()

    def build(self, samples, t: TrainerConfig) -> list:
        from starloop import build

        return build.reward_examples(samples, t.reward, filter_degenerate=t.filter_degenerate,
                                     degenerate_penalty=t.degenerate_penalty, require_gain=t.require_gain)

    def coefficients(self, rewards: torch.Tensor, groups: torch.Tensor, t: TrainerConfig) -> torch.Tensor:
        raise NotImplementedError

    def example_coefficients(self, data: Sequence[Example], t: TrainerConfig) -> torch.Tensor:
        """`coefficients` of the examples of one iteration, grouped by question."""
        from starloop.rewards import group_index

        rewards = torch.tensor([e.reward for e in data], dtype=torch.float32)
        return self.coefficients(rewards, group_index([e.group for e in data]), t)

    def positive_weight_on_wrong(self, data: Sequence[Example], t: TrainerConfig) -> float | None:
        """Share of the positive coefficient mass on samples with a wrong answer, per sample (before the loss
        weighs each by its tokens), over the iteration's training data: for weighted_sft the share of the
        training weight (its weights are positive and sum to 1 per question), for reinforce and grpo the share
        of the reinforcement (positive advantages). None when the data does not record correctness."""
        if not data or any(e.correct is None for e in data):
            return None
        pos = self.example_coefficients(data, t).clamp(min=0)
        total = float(pos.sum())
        wrong = float(pos[torch.tensor([not e.correct for e in data])].sum())
        return wrong / total if total > 0 else None

    def units(self, tok, data: Sequence[Example], t: TrainerConfig) -> list[Unit]:
        if not data:
            return []
        coef = self.example_coefficients(data, t)
        return [Unit(*tokenize_pair(tok, e.prompt, e.completion, e.eos), scalars={"coef": c, "reward": e.reward},
                     source=e.group) for e, c in zip(data, coef.tolist())]


def policy_logps(model, tok, units: Sequence[Unit]):
    """(log pi(completion | prompt) summed per unit, completion token counts), each [B]."""
    return logps(model, tok, [u.ctx for u in units], [u.cont for u in units])


def coef_metrics(logp: torch.Tensor, n: torch.Tensor, coef: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"mean_coef": coef.mean(), "logp": (logp / n.clamp(min=1)).detach().mean()}


__all__ = ["RewardStrategy", "Strategy", "TrainContext", "coef_metrics", "losses", "policy_logps"]
