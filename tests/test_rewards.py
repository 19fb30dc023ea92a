"""Rewards on small numbers worked out by hand, and the below-random case: 0/1 rewards give no gradient
when every sample of every question is wrong, likelihood rewards still do."""

from __future__ import annotations

import math

import pytest
import torch

from starloop.losses import advantages, policy_gradient_loss
from starloop.rewards import (
    answer_logprob_reward,
    expected_likelihood_reward,
    gain_reward,
    model_labels,
    quiet_star_reward,
    smoothed_labels,
)


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def test_answer_logprob_is_a_constant():
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


def test_quiet_star_baseline_leaves_out_hinted_samples():
    """A hinted (rationalized, off-policy) sample gets a reward but is not in its question's baseline.
    Before the fix the baseline of q1 was mean(-1, -3, 0) = -4/3 with the hinted -0 inside it."""
    logp = t(-1.0, -3.0, 0.0, -2.0, -2.0)
    on = torch.tensor([True, True, False, True, True])
    r = quiet_star_reward(logp, ["q1", "q1", "q1", "q2", "q2"], on_policy=on)
    # q1 baseline mean(-1, -3) = -2 -> [1, -1, 2]; q2 baseline -2 -> [0, 0]
    assert r.tolist() == pytest.approx([1.0, -1.0, 2.0, 0.0, 0.0])
    # a question whose samples are all hinted falls back on its own mean
    assert quiet_star_reward(t(-1.0, -3.0), ["q", "q"], torch.tensor([False, False])).tolist() == [1.0, -1.0]


def test_smoothed_and_model_label_distributions_by_hand():
    d = smoothed_labels(torch.tensor([1, 0]), torch.tensor([4, 3]), 4, 0.3)
    assert d[0].tolist() == pytest.approx([0.1, 0.7, 0.1, 0.1])
    assert d[1].tolist() == pytest.approx([0.7, 0.15, 0.15, 0.0])  # a 3-option question: D sums to 1
    assert smoothed_labels(torch.tensor([2]), torch.tensor([4]), 4, 0.0)[0].tolist() == [0.0, 0.0, 1.0, 0.0]
    # model: softmax over the question's options of log p(letter | x), other columns 0
    lp = torch.log(t(0.2, 0.2, 0.1, 0.5)).view(1, 4)
    assert model_labels(lp, torch.tensor([4]))[0].tolist() == pytest.approx([0.2, 0.2, 0.1, 0.5])
    assert model_labels(lp, torch.tensor([3]))[0].tolist() == pytest.approx([0.4, 0.4, 0.2, 0.0])
    # expected_likelihood under the smoothed D differs from answer_logprob: p(y|x,z) = [.5, .25, .125, .125],
    # gold B, eps 0.3: log(0.1*.5 + 0.7*.25 + 0.1*.125 + 0.1*.125) = log(0.25)
    p = torch.log(t(0.5, 0.25, 0.125, 0.125)).view(1, 4)
    got = expected_likelihood_reward(p, smoothed_labels(torch.tensor([1]), torch.tensor([4]), 4, 0.3).double())
    assert got.item() == pytest.approx(math.log(0.25))


def test_baselines_make_answer_logprob_quiet_star_and_gain_identical():
    """The docs' claim: a per-question constant cancels under the mean and RLOO baselines."""
    logp = t(-1.0, -2.5, -0.5, -3.0, -1.2, -0.7).view(2, 3)
    without = t(-1.4, -2.0)
    for baseline in ("mean", "rloo"):
        a = advantages(answer_logprob_reward(logp), baseline=baseline)
        assert advantages(quiet_star_reward(logp), baseline=baseline).flatten().tolist() == pytest.approx(a.flatten().tolist())
        assert advantages(gain_reward(logp, without), baseline=baseline).flatten().tolist() == pytest.approx(a.flatten().tolist())
    assert advantages(gain_reward(logp, without), baseline="none").flatten().tolist() != pytest.approx(
        advantages(answer_logprob_reward(logp), baseline="none").flatten().tolist())


def test_below_random_only_likelihood_rewards_give_gradient():
    """Yoruba-like case: 3 questions x 4 samples, every extracted answer wrong."""
    correct = torch.zeros(3, 4, dtype=torch.bool)
    # log p(gold answer | x, z): all samples wrong, yet some rationales make the gold answer likelier
    logp_answer = t(-3.0, -1.0, -2.0, -2.0, -5.0, -4.0, -1.5, -2.5, -2.0, -2.0, -0.5, -3.5).view(3, 4)
    logp_rationale = torch.full((3, 4), -20.0, dtype=torch.float64, requires_grad=True)  # log pi(z | x)

    def grad_of(adv: torch.Tensor) -> torch.Tensor:
        loss = policy_gradient_loss(logp_rationale.flatten(), torch.ones(12), adv.flatten(),
                                    normalization="token_budget", step_sequences=12, token_budget=1)
        (g,) = torch.autograd.grad(loss, logp_rationale)
        return g

    adv_01 = advantages(correct.double(), baseline="rloo")  # the `correct` reward: 1[answer(z) = y*]
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
