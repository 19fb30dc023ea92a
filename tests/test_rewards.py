"""Rewards on small numbers worked out by hand, and the below-random case: 0/1 rewards give no gradient
when every sample of every question is wrong, likelihood rewards still do."""

from __future__ import annotations

import math

import pytest
import torch

from starloop.losses import advantages, reinforce_loss
from starloop.rewards import (
    REWARD_INPUTS,
    REWARDS,
    answer_logprob_reward,
    apply_degenerate_penalty,
    correct_reward,
    expected_likelihood_reward,
    gain_reward,
    quiet_star_reward,
)


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def test_correct_and_answer_logprob():
    assert correct_reward(torch.tensor([True, False, True])).tolist() == [1.0, 0.0, 1.0]
    logp = t(-0.5, -2.0).requires_grad_()
    r = answer_logprob_reward(logp)
    assert r.tolist() == [-0.5, -2.0] and not r.requires_grad  # rewards are constants


def test_quiet_star_by_hand():
    # question 1: [-1, -2, -3], mean -2 -> [1, 0, -1]; question 2: [-4, -4, -1], mean -3 -> [-1, -1, 2]
    r = quiet_star_reward(t(-1.0, -2.0, -3.0, -4.0, -4.0, -1.0).view(2, 3))
    assert r.flatten().tolist() == pytest.approx([1.0, 0.0, -1.0, -1.0, -1.0, 2.0])
    flat = quiet_star_reward(t(-1.0, -4.0, -2.0, -4.0, -3.0, -1.0), ["q1", "q2", "q1", "q2", "q1", "q2"])
    assert flat.tolist() == pytest.approx([1.0, -1.0, 0.0, -1.0, -1.0, 2.0])


def test_gain_by_hand():
    # log p(y*|x) = -1.5 without a rationale; with: -1 (helps by 0.5), -2 (hurts by 0.5)
    r = gain_reward(t(-1.0, -2.0, -0.5, -0.5).view(2, 2), t(-1.5, -0.25))
    assert r.flatten().tolist() == pytest.approx([0.5, -0.5, -0.25, -0.25])


def test_expected_likelihood_by_hand():
    # p(y | x, z) = [0.5, 0.25, 0.125, 0.125]; D = [0.5, 0.5, 0, 0]
    # E_D p = 0.5 * 0.5 + 0.5 * 0.25 = 0.375
    logp = torch.log(t(0.5, 0.25, 0.125, 0.125)).view(1, 4)
    r = expected_likelihood_reward(logp, t(0.5, 0.5, 0.0, 0.0).view(1, 4))
    assert r.item() == pytest.approx(math.log(0.375))
    # uniform D: log of the mean = log(1/4)
    assert expected_likelihood_reward(logp, t(0.25, 0.25, 0.25, 0.25)).item() == pytest.approx(math.log(0.25))


def test_expected_likelihood_with_one_hot_is_answer_logprob():
    torch.manual_seed(0)
    logp = torch.randn(5, 4, dtype=torch.float64).log_softmax(-1)
    gold = torch.tensor([0, 3, 1, 2, 3])
    one_hot = torch.nn.functional.one_hot(gold, 4).double()
    got = expected_likelihood_reward(logp, one_hot)
    assert got.tolist() == pytest.approx(
        answer_logprob_reward(logp.gather(1, gold[:, None]).squeeze(1)).tolist()
    )


def test_expected_likelihood_is_stable_for_tiny_probabilities():
    # log(0.5 e^-1000 + 0.5 e^-1001) = -1000 + log(0.5 + 0.5 e^-1); naive exp would underflow to log(0)
    r = expected_likelihood_reward(t(-1000.0, -1001.0).view(1, 2), t(0.5, 0.5).view(1, 2))
    assert r.item() == pytest.approx(-1000.0 + math.log(0.5 + 0.5 * math.exp(-1)))


def test_degenerate_penalty():
    r = apply_degenerate_penalty(t(1.0, 0.0, -2.0), torch.tensor([True, False, True]), 0.5)
    assert r.tolist() == [0.5, 0.0, -2.5]
    assert apply_degenerate_penalty(t(1.0), torch.tensor([True]), 0.0).tolist() == [1.0]


def test_reward_table_documents_every_reward():
    assert (
        set(REWARDS)
        == set(REWARD_INPUTS)
        == {"correct", "answer_logprob", "quiet_star", "gain", "expected_likelihood"}
    )


def test_below_random_only_likelihood_rewards_give_gradient():
    """Yoruba-like case: 3 questions x 4 samples, every extracted answer wrong."""
    correct = torch.zeros(3, 4, dtype=torch.bool)
    # log p(gold answer | x, z): all samples wrong, yet some rationales make the gold answer likelier
    logp_answer = t(-3.0, -1.0, -2.0, -2.0, -5.0, -4.0, -1.5, -2.5, -2.0, -2.0, -0.5, -3.5).view(3, 4)
    logp_rationale = torch.full((3, 4), -20.0, dtype=torch.float64, requires_grad=True)  # log pi(z | x)

    def grad_of(adv: torch.Tensor) -> torch.Tensor:
        (g,) = torch.autograd.grad(reinforce_loss(logp_rationale.flatten(), adv.flatten()), logp_rationale)
        return g

    adv_01 = advantages(correct_reward(correct), baseline="rloo")
    assert torch.count_nonzero(adv_01) == 0
    assert torch.count_nonzero(grad_of(adv_01)) == 0  # 0/1 rewards: nothing to learn from

    adv_ll = advantages(answer_logprob_reward(logp_answer), baseline="rloo")
    # question 1: [-3, -1, -2, -2] -> rloo A_i = 4/3 (r_i - mean) with mean -2 -> [-4/3, 4/3, 0, 0]
    assert adv_ll[0].tolist() == pytest.approx([-4 / 3, 4 / 3, 0.0, 0.0])
    g = grad_of(adv_ll)
    assert (g != 0).any(dim=1).all()  # every question now carries signal
    assert g[0, 1] < 0 < g[0, 0]  # descent raises log pi of the rationale that helped, lowers the other

    adv_qs = advantages(quiet_star_reward(logp_answer), baseline="none")  # the reward is already centred
    # question 1: [-3, -1, -2, -2] - (-2) = [-1, 1, 0, 0]
    assert adv_qs[0].tolist() == pytest.approx([-1.0, 1.0, 0.0, 0.0])
    assert (grad_of(adv_qs) != 0).any(dim=1).all()
