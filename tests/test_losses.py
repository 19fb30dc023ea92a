"""Losses and advantages on small numbers worked out by hand (math.log / math.exp, not the code)."""

from __future__ import annotations

import math

import pytest
import torch

from starloop.losses import (
    BASELINES,
    advantages,
    dpo_loss,
    policy_gradient_loss,
    rpo_loss,
    sft_loss,
    target_weights,
    weighted_nll,
    weighted_sft_loss,
)


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def softplus(x: float) -> float:  # -log sigma(-x)
    return math.log1p(math.exp(x))


def test_sft_loss_is_token_mean():
    # two sequences: log-probs -2 over 2 tokens and -3 over 4 tokens -> (2 + 3) / 6
    assert sft_loss(t(-2.0, -3.0), torch.tensor([2, 4])).item() == pytest.approx(5 / 6)


def test_dpo_sigmoid_by_hand():
    beta = 0.1
    # pair 1: rho_c = -10 - (-11) = 1, rho_r = -12 - (-11) = -1, h = 2 -> -log sigma(0.2) = log(1 + e^-0.2)
    # pair 2: rho_c = -5 - (-4) = -1, rho_r = -6 - (-7) = 1,  h = -2 -> -log sigma(-0.2) = log(1 + e^0.2)
    loss, m = dpo_loss(t(-10.0, -5.0), t(-12.0, -6.0), t(-11.0, -4.0), t(-11.0, -7.0), beta)
    expected = (math.log(1 + math.exp(-0.2)) + math.log(1 + math.exp(0.2))) / 2
    assert loss.item() == pytest.approx(expected, abs=1e-12)
    assert m["rewards/chosen"].item() == pytest.approx((0.1 - 0.1) / 2)
    assert m["rewards/rejected"].item() == pytest.approx((-0.1 + 0.1) / 2)
    assert m["rewards/margins"].item() == pytest.approx((0.2 - 0.2) / 2)
    assert m["rewards/accuracies"].item() == 0.5
    assert m["logps/chosen"].item() == -7.5 and m["logps/rejected"].item() == -9.0


def test_dpo_gradient_by_hand():
    # d/d logpi(c) of -log sigma(beta h) = -beta sigma(-beta h); h = 2, beta = 0.1
    policy_c = t(-10.0).requires_grad_()
    policy_r = t(-12.0).requires_grad_()
    loss, _ = dpo_loss(policy_c, policy_r, t(-11.0), t(-11.0), 0.1)
    loss.backward()
    g = 0.1 / (1 + math.exp(0.2))
    assert policy_c.grad.item() == pytest.approx(-g, abs=1e-12)
    assert policy_r.grad.item() == pytest.approx(g, abs=1e-12)


def test_dpo_label_smoothing_by_hand():
    # h = 2, beta = 0.5, eps = 0.1: 0.9 * log(1 + e^-1) + 0.1 * log(1 + e^1)
    loss, _ = dpo_loss(t(-10.0), t(-12.0), t(-11.0), t(-11.0), 0.5, label_smoothing=0.1)
    assert loss.item() == pytest.approx(0.9 * math.log(1 + math.exp(-1)) + 0.1 * math.log(1 + math.exp(1)))


def test_ipo_averages_log_ratios_per_token():
    # rho_c = 1 over 2 tokens -> 0.5; rho_r = -1 over 4 tokens -> -0.25; h = 0.75
    # beta = 0.1: 1/(2 beta) = 5 -> (0.75 - 5)^2 = 18.0625
    loss, m = dpo_loss(
        t(-10.0),
        t(-12.0),
        t(-11.0),
        t(-11.0),
        0.1,
        "ipo",
        chosen_tokens=torch.tensor([2]),
        rejected_tokens=torch.tensor([4]),
    )
    assert loss.item() == pytest.approx(18.0625)
    assert m["rewards/margins"].item() == pytest.approx(0.2)  # metrics stay on summed log-ratios (TRL)
    with pytest.raises(ValueError, match="chosen_tokens"):
        dpo_loss(t(-10.0), t(-12.0), t(-11.0), t(-11.0), 0.1, "ipo")
    with pytest.raises(ValueError, match="loss_type"):
        dpo_loss(t(-10.0), t(-12.0), t(-11.0), t(-11.0), 0.1, "hinge")


def test_rpo_adds_token_mean_nll_of_chosen():
    # dpo part as in test_dpo_sigmoid_by_hand; NLL = (10 + 5) / (3 + 2) = 3; alpha = 0.5
    loss, m = rpo_loss(
        t(-10.0, -5.0), t(-12.0, -6.0), t(-11.0, -4.0), t(-11.0, -7.0), 0.1, 0.5, torch.tensor([3, 2])
    )
    dpo = (math.log(1 + math.exp(-0.2)) + math.log(1 + math.exp(0.2))) / 2
    assert loss.item() == pytest.approx(dpo + 0.5 * 3.0, abs=1e-12)
    assert m["nll"].item() == pytest.approx(3.0)


def test_policy_gradient_loss_by_hand():
    logp = t(-1.0, -2.0, -3.0).requires_grad_()
    adv = t(1.0, 0.0, -1.0).requires_grad_()
    n = torch.tensor([1, 2, 3])
    # token_budget, S = 4 sequences a step, T = 10: -(1*-1 + 0*-2 + -1*-3) / 40 = -2/40
    loss = policy_gradient_loss(logp, n, adv, normalization="token_budget", step_sequences=4, token_budget=10)
    assert loss.item() == pytest.approx(-2 / 40)
    loss.backward()
    assert logp.grad.tolist() == pytest.approx([-1 / 40, 0.0, 1 / 40])
    assert adv.grad is None  # advantages are constants
    # sequence_mean: -(1*-1/1 + 0 + -1*-3/3) / 4 = 0
    got = policy_gradient_loss(logp, n, adv, normalization="sequence_mean", step_sequences=4, token_budget=10)
    assert got.item() == pytest.approx(0.0)
    got = policy_gradient_loss(logp, n, t(2.0, 1.0, 0.0), normalization="sequence_mean", step_sequences=4,
                               token_budget=10)
    assert got.item() == pytest.approx(-(2 * -1 + 1 * -1) / 4)
    with pytest.raises(ValueError, match="normalization"):
        policy_gradient_loss(logp, n, adv, normalization="token", step_sequences=4, token_budget=10)


def test_weighted_nll_is_a_share_of_the_step():
    logp = t(-2.0, -4.0, -6.0)
    w = t(0.5, 0.25, 1.0)
    # the step's denominator sum w |z| with |z| = [2, 4, 3]: 1 + 1 + 3 = 5
    whole = weighted_nll(logp, w, 5.0)
    assert whole.item() == pytest.approx((1 + 1 + 6) / 5)
    parts = weighted_nll(logp[:1], w[:1], 5.0) + weighted_nll(logp[1:], w[1:], 5.0)
    assert parts.item() == pytest.approx(whole.item())


def test_advantages_by_hand():
    r = t(1.0, 0.0, 0.0, 1.0).view(1, 4)
    # rloo: b_0 = (0 + 0 + 1)/3, b_1 = (1 + 0 + 1)/3
    assert advantages(r, baseline="rloo")[0].tolist() == pytest.approx([2 / 3, -2 / 3, -2 / 3, 2 / 3])
    assert advantages(r, baseline="mean")[0].tolist() == pytest.approx([0.5, -0.5, -0.5, 0.5])
    assert advantages(r, baseline="none")[0].tolist() == [1.0, 0.0, 0.0, 1.0]
    assert advantages(r, baseline="mean", clip_negative=True)[0].tolist() == [0.5, 0.0, 0.0, 0.5]
    # K = 1: leave-one-out has nobody left -> baseline 0
    assert advantages(t(0.3, -2.0).view(2, 1), baseline="rloo").flatten().tolist() == pytest.approx(
        [0.3, -2.0]
    )
    assert set(BASELINES) == {"rloo", "mean", "none"}
    with pytest.raises(ValueError, match="baseline"):
        advantages(r, baseline="grpo")


def test_advantages_flat_groups_of_unequal_size():
    # group a: [1, 3]   -> rloo [1-3, 3-1] = [-2, 2]
    # group b: [0, 3, 6] -> rloo [0-4.5, 3-3, 6-1.5] = [-4.5, 0, 4.5]
    r = t(1.0, 0.0, 3.0, 3.0, 6.0)
    ids = ["a", "b", "a", "b", "b"]
    assert advantages(r, ids).tolist() == pytest.approx([-2.0, -4.5, 2.0, 0.0, 4.5])
    assert advantages(r, torch.tensor([7, 2, 7, 2, 2])).tolist() == pytest.approx([-2.0, -4.5, 2.0, 0.0, 4.5])
    assert advantages(r, ids, "mean").tolist() == pytest.approx([-1.0, -3.0, 1.0, 0.0, 3.0])


def test_target_weights_by_hand():
    # r = [0, ln 3], lam = 1 -> exp -> [1, 3] -> [1/4, 3/4]; lam = 0.5 -> [1, 9] -> [0.1, 0.9]
    r = t(0.0, math.log(3)).view(1, 2)
    assert target_weights(r, lam=1.0)[0].tolist() == pytest.approx([0.25, 0.75])
    assert target_weights(r, lam=0.5)[0].tolist() == pytest.approx([0.1, 0.9])
    # flat groups; large rewards stay finite (max subtracted); group b: [1000, 1000 + ln 3]
    flat = target_weights(t(0.0, 1000.0, math.log(3), 1000.0 + math.log(3)), [0, 1, 0, 1], lam=1.0)
    assert flat.tolist() == pytest.approx([0.25, 0.25, 0.75, 0.75])
    with pytest.raises(ValueError, match="lambda"):
        target_weights(r, lam=0.0)


def test_weighted_sft_loss_by_hand():
    r = t(0.0, math.log(3)).view(1, 2)  # weights [1/4, 3/4]
    logp = t(-2.0, -4.0).view(1, 2).requires_grad_()
    # sequence level: -(1/4 * -2 + 3/4 * -4) / 1 group = 3.5
    loss = weighted_sft_loss(logp, None, r, None, 1.0)
    assert loss.item() == pytest.approx(3.5)
    loss.backward()
    assert logp.grad[0].tolist() == pytest.approx([-0.25, -0.75])
    # token-normalised: 3.5 / (1/4 * 2 + 3/4 * 6) = 3.5 / 5
    assert weighted_sft_loss(logp, torch.tensor([[2, 6]]), r, None, 1.0).item() == pytest.approx(0.7)
    # two flat groups, lam = 1: group 0 as above (3.5), group 1 equal rewards -> [1/2, 1/2] of [-1, -3] -> 2
    flat = weighted_sft_loss(
        t(-2.0, -1.0, -4.0, -3.0), None, t(0.0, 5.0, math.log(3), 5.0), [0, 1, 0, 1], 1.0
    )
    assert flat.item() == pytest.approx((3.5 + 2.0) / 2)


def test_weighted_sft_reduces_to_sft_for_equal_rewards():
    logp = t(-2.0, -4.0, -1.0, -7.0).view(2, 2)
    n = torch.tensor([[2, 3], [1, 5]])
    got = weighted_sft_loss(logp, n, torch.zeros(2, 2), None, 0.7)
    assert got.item() == pytest.approx(sft_loss(logp.flatten(), n.flatten()).item())  # 14 / 11


def test_group_normalized_advantages_by_hand():
    from starloop.losses import group_normalized_advantages

    # q0: [1, 0, 0, 1] mean .5 std .5 -> [1, -1, -1, 1]; q1: [2, 2, 2, 2] -> 0
    r = t(1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0).view(2, 4)
    got = group_normalized_advantages(r, eps=0.0 + 1e-12)
    assert got.flatten().tolist() == pytest.approx([1, -1, -1, 1, 0, 0, 0, 0], abs=1e-6)
    # flat groups of unequal size; no std scaling: [3, 1] -> [1, -1]; [0, 3, 6] -> [-3, 0, 3]
    flat = group_normalized_advantages(t(3.0, 0.0, 1.0, 3.0, 6.0), ["a", "b", "a", "b", "b"], scale_std=False)
    assert flat.tolist() == pytest.approx([1.0, -3.0, -1.0, 0.0, 3.0])
    # with std: [0, 3, 6] has std sqrt(6) -> [-3, 0, 3] / sqrt(6)
    scaled = group_normalized_advantages(t(0.0, 3.0, 6.0), [0, 0, 0], eps=0.0)
    assert scaled.tolist() == pytest.approx([-3 / math.sqrt(6), 0.0, 3 / math.sqrt(6)])
