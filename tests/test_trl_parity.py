"""starloop's DPO/IPO/RPO losses and log-prob gathering agree with TRL's implementation (< 1e-5).

TRL >= 1.0 has no standalone `DPOTrainer.dpo_loss`: the loss lives in `DPOTrainer._compute_loss(self,
model, inputs, return_outputs)`, which runs the model through TRL's fused LM head. We call that unbound
method with a minimal stand-in for `self` (beta, loss types, a pass-through accelerator), reference
log-probs precomputed in `inputs`, and either a stand-in model returning per-token log-probs (to get
the gradient with respect to the policy log-probs) or a real tiny Llama patched by `add_fused_lm_head`.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

trl = pytest.importorskip("trl")
from trl.trainer.dpo_trainer import DataCollatorForPreference, DPOTrainer
from trl.trainer.utils import add_fused_lm_head, selective_log_softmax

from starloop.logprobs import batch_from_pairs, model_sequence_logprobs, sequence_logprobs
from starloop.losses import dpo_loss, rpo_loss

if not hasattr(DPOTrainer, "_compute_loss"):
    pytest.skip("this parity test targets TRL >= 1.0 (DPOTrainer._compute_loss)", allow_module_level=True)


def tiny_llama() -> torch.nn.Module:
    from starloop.models import tiny_random_model

    return tiny_random_model(0, vocab_size=211).float()


BETA = 0.1
EXAMPLES = [  # prompt / chosen / rejected token ids of unequal lengths
    {"prompt_ids": [1, 5, 9, 14], "chosen_ids": [20, 21, 22], "rejected_ids": [30]},
    {"prompt_ids": [1, 7], "chosen_ids": [40], "rejected_ids": [41, 42, 43, 44]},
    {"prompt_ids": [1, 3, 3, 3, 3, 8], "chosen_ids": [50, 51], "rejected_ids": [52, 53]},
]
REF_CHOSEN = torch.tensor([-9.5, -4.0, -7.25])
REF_REJECTED = torch.tensor([-3.0, -13.0, -6.5])


class PassThroughAccelerator:
    device = torch.device("cpu")

    def gather(self, x):
        return x

    gather_for_metrics = gather

    def unwrap_model(self, model):
        return model


def trl_self(model, loss_types: list[str], loss_weights: list[float] | None = None) -> SimpleNamespace:
    return SimpleNamespace(
        model=model,
        ref_model=None,
        accelerator=PassThroughAccelerator(),
        beta=BETA,
        precompute_ref_logps=True,
        loss_types=loss_types,
        loss_weights=loss_weights or [1.0] * len(loss_types),
        ld_alpha=None,
        f_divergence_type="reverse_kl",
        label_smoothing=0.0,
        use_weighting=False,
        aux_loss_enabled=False,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        _total_train_tokens=0,
        _tp_size=1,
        args=SimpleNamespace(gradient_checkpointing_kwargs=None),
    )


def trl_inputs(pad_token_id: int = 0) -> dict[str, torch.Tensor]:
    batch = DataCollatorForPreference(pad_token_id=pad_token_id)(EXAMPLES)
    batch["ref_chosen_logps"], batch["ref_rejected_logps"] = REF_CHOSEN, REF_REJECTED
    return batch


class PerTokenLogpsModel(torch.nn.Module):
    """Stands in for a fused-head model: returns fixed per-token log-probs (a leaf we differentiate)."""

    def __init__(self, per_token: torch.Tensor):
        super().__init__()
        self.per_token = per_token

    def forward(self, *, labels, fused_lm_head, **kwargs):
        mask = labels[:, 1:] != -100
        zeros = torch.zeros_like(self.per_token)
        return SimpleNamespace(
            log_probs=self.per_token * mask, entropy=zeros, mean_logits=zeros, is_top1=zeros.bool()
        )


def _token_counts(completion_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return completion_mask.sum(1).chunk(2)


@pytest.mark.parametrize(
    "loss_types, loss_weights",
    [(["sigmoid"], None), (["ipo"], None), (["sigmoid", "sft"], [1.0, 0.7])],  # last = RPO, alpha 0.7
)
def test_loss_and_grad_wrt_policy_logps_match_trl(loss_types, loss_weights):
    inputs = trl_inputs()
    torch.manual_seed(0)
    per_token = (
        -torch.rand(inputs["input_ids"].shape[0], inputs["input_ids"].shape[1] - 1) * 3
    ).requires_grad_()
    model = PerTokenLogpsModel(per_token)
    trl_loss = DPOTrainer._compute_loss(trl_self(model, loss_types, loss_weights), model, inputs, False)
    (trl_grad,) = torch.autograd.grad(trl_loss, per_token)

    shift_mask = inputs["completion_mask"][:, 1:].bool()
    chosen, rejected = (per_token * shift_mask).sum(1).chunk(2)
    n_chosen, n_rejected = _token_counts(inputs["completion_mask"])
    if loss_types == ["sigmoid", "sft"]:
        ours, metrics = rpo_loss(chosen, rejected, REF_CHOSEN, REF_REJECTED, BETA, 0.7, n_chosen)
    else:
        ours, metrics = dpo_loss(
            chosen,
            rejected,
            REF_CHOSEN,
            REF_REJECTED,
            BETA,
            loss_types[0],
            chosen_tokens=n_chosen,
            rejected_tokens=n_rejected,
        )
    (our_grad,) = torch.autograd.grad(ours, per_token)
    assert ours.item() == pytest.approx(trl_loss.item(), abs=1e-5)
    torch.testing.assert_close(our_grad, trl_grad, atol=1e-5, rtol=0)
    logged = trl_self(model, loss_types, loss_weights)
    DPOTrainer._compute_loss(logged, model, inputs, False)
    for key in (
        "rewards/chosen",
        "rewards/rejected",
        "rewards/margins",
        "rewards/accuracies",
        "logps/chosen",
    ):
        assert metrics[key].item() == pytest.approx(logged._metrics["train"][key][0], abs=1e-5), key


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo"])
def test_end_to_end_with_tiny_llama_matches_trl(loss_type):
    """TRL (right padding, its fused head) vs starloop (left padding, another pad id): same loss and
    same parameter gradients."""
    model = tiny_llama().train()
    trl_model = copy.deepcopy(model)
    add_fused_lm_head(trl_model, outputs=("log_probs", "entropy", "mean_logits", "is_top1"))
    inputs = trl_inputs()
    trl_loss = DPOTrainer._compute_loss(trl_self(trl_model, [loss_type]), trl_model, inputs, False)
    trl_loss.backward()

    sequences = [(e["prompt_ids"], e["chosen_ids"]) for e in EXAMPLES] + [
        (e["prompt_ids"], e["rejected_ids"]) for e in EXAMPLES
    ]
    batch = batch_from_pairs([p for p, _ in sequences], [z for _, z in sequences], 77, side="left")
    logps, n_tokens = model_sequence_logprobs(model, **batch)
    chosen, rejected = logps.chunk(2)
    n_chosen, n_rejected = n_tokens.chunk(2)
    ours, _ = dpo_loss(
        chosen,
        rejected,
        REF_CHOSEN,
        REF_REJECTED,
        BETA,
        loss_type,
        chosen_tokens=n_chosen,
        rejected_tokens=n_rejected,
    )
    ours.backward()
    assert ours.item() == pytest.approx(trl_loss.item(), abs=1e-5)
    for (name, p), q in zip(model.named_parameters(), trl_model.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("side", ["left", "right"])
def test_sequence_logps_match_trl_fused_head(side):
    model = tiny_llama().eval()
    trl_model = copy.deepcopy(model)
    add_fused_lm_head(trl_model)
    inputs = trl_inputs()
    labels = inputs["input_ids"].masked_fill(inputs["completion_mask"] == 0, -100)
    with torch.no_grad():
        trl_logps = trl_model(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            labels=labels,
            fused_lm_head=True,
        ).log_probs.sum(1)
        sequences = [(e["prompt_ids"], e["chosen_ids"]) for e in EXAMPLES] + [
            (e["prompt_ids"], e["rejected_ids"]) for e in EXAMPLES
        ]
        batch = batch_from_pairs([p for p, _ in sequences], [z for _, z in sequences], 9, side=side)
        ours, _ = model_sequence_logprobs(model, **batch)
    torch.testing.assert_close(ours, trl_logps, atol=1e-5, rtol=0)


def test_sequence_logprobs_matches_selective_log_softmax():
    torch.manual_seed(1)
    logits = torch.randn(4, 12, 97)
    labels = torch.randint(0, 97, (4, 12))
    labels[:, :5] = -100
    labels[3, 9:] = -100
    mask = labels[:, 1:] != -100
    trl_tok = selective_log_softmax(logits[:, :-1], labels[:, 1:].clamp(min=0))
    ours, n = sequence_logprobs(logits, labels, chunk_size=5)
    torch.testing.assert_close(ours, (trl_tok * mask).sum(1), atol=1e-5, rtol=0)
    assert n.tolist() == mask.sum(1).tolist()
