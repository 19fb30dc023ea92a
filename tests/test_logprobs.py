"""Sequence log-probs: chunked maths equals the naive log_softmax + gather, and a sequence's log-prob
does not depend on its batch-mates, the padding side, or the pad id."""

from __future__ import annotations

import copy

import pytest
import torch

from starloop import logprobs as lp
from starloop.logprobs import (
    answer_letter_logprobs,
    batch_from_pairs,
    model_sequence_logprobs,
    position_ids_from_mask,
    sequence_logprobs,
)
from starloop.models import tiny_random_model

VOCAB = 211


def tiny_llama(vocab: int = VOCAB, attn: str = "sdpa", seed: int = 0):
    return tiny_random_model(seed, vocab_size=vocab, attn_implementation=attn).float().eval()


def naive_logprob(model, context: list[int], continuation: list[int]) -> float:
    """Unpadded, unbatched: full logits -> log_softmax -> gather."""
    ids = torch.tensor([context + continuation])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, :-1].float()
    logps = logits.log_softmax(-1).gather(-1, ids[0, 1:, None]).squeeze(-1)
    return logps[len(context) - 1 :].sum().item()


TARGET = ([1, 17, 42, 99, 5], [7, 8, 150, 3])
OTHERS = [([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], [12, 13, 14, 15, 16, 17]), ([1], [2]), ([4, 4], [9, 9, 9])]


def test_sequence_logprobs_matches_naive_values_and_grads():
    torch.manual_seed(0)
    logits = torch.randn(3, 9, 50, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 50, (3, 9))
    labels[0, :4] = -100
    labels[1, 7:] = -100
    labels[2, :] = -100
    got, n = sequence_logprobs(logits, labels, chunk_size=2)
    naive_tok = logits[:, :-1].log_softmax(-1).gather(-1, labels[:, 1:].clamp(min=0)[..., None]).squeeze(-1)
    naive = (naive_tok * (labels[:, 1:] != -100)).sum(1)
    assert n.tolist() == [5, 6, 0]
    torch.testing.assert_close(got, naive, atol=1e-10, rtol=0)
    (g_got,) = torch.autograd.grad(got.sum(), logits)
    (g_ref,) = torch.autograd.grad(naive.sum(), logits)
    torch.testing.assert_close(g_got, g_ref, atol=1e-10, rtol=0)
    # half-precision logits are upcast per chunk: float32 sums
    half, _ = sequence_logprobs(logits.detach().bfloat16(), labels)
    assert half.dtype == torch.float32


def test_position_ids_ignore_left_padding():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 0, 0]])
    assert position_ids_from_mask(mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 2, 2]]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_logprob_independent_of_batch_padding_side_and_pad_id(attn):
    model = tiny_llama(attn=attn)
    reference = naive_logprob(model, *TARGET)
    alone = batch_from_pairs([TARGET[0]], [TARGET[1]], 0)
    with torch.no_grad():
        got, n = model_sequence_logprobs(model, **alone)
    assert n.tolist() == [len(TARGET[1])]
    assert got.item() == pytest.approx(reference, abs=1e-5)
    contexts = [c for c, _ in OTHERS[:2]] + [TARGET[0]] + [OTHERS[2][0]]
    conts = [z for _, z in OTHERS[:2]] + [TARGET[1]] + [OTHERS[2][1]]
    for side in ("left", "right"):
        for pad_id in (0, VOCAB - 1, 42):
            batch = batch_from_pairs(contexts, conts, pad_id, side=side)
            with torch.no_grad():
                got, n = model_sequence_logprobs(model, **batch)
            assert got[2].item() == pytest.approx(reference, abs=1e-5), (side, pad_id)
            for i, (c, z) in enumerate(zip(contexts, conts)):
                assert got[i].item() == pytest.approx(naive_logprob(model, c, z), abs=1e-5)
            assert n.tolist() == [len(z) for z in conts]


def test_labels_on_padding_are_ignored():
    model = tiny_llama()
    batch = batch_from_pairs([TARGET[0], [1]], [TARGET[1], [2]], 0, side="left")
    batch["labels"] = torch.where(batch["attention_mask"] == 0, 5, batch["labels"])  # garbage on pads
    with torch.no_grad():
        got, n = model_sequence_logprobs(model, **batch)
    assert got[0].item() == pytest.approx(naive_logprob(model, *TARGET), abs=1e-5)
    assert n.tolist() == [len(TARGET[1]), 1]


def test_fast_path_equals_full_logits_path_with_grads(monkeypatch):
    model = tiny_llama().train()
    batch = batch_from_pairs([TARGET[0], OTHERS[0][0]], [TARGET[1], OTHERS[0][1]], 3, side="left")
    fast, _ = model_sequence_logprobs(model, **batch, chunk_size=3)  # several chunks
    fast_grads = torch.autograd.grad(fast @ torch.tensor([1.0, -2.0]), list(model.parameters()))
    monkeypatch.setattr(lp, "_split_backbone_and_head", lambda m: None)
    full, _ = model_sequence_logprobs(model, **batch)
    full_grads = torch.autograd.grad(full @ torch.tensor([1.0, -2.0]), list(model.parameters()))
    torch.testing.assert_close(fast, full, atol=1e-5, rtol=0)
    for a, b in zip(fast_grads, full_grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_all_ignored_batch_gives_zero_and_stays_differentiable():
    model = tiny_llama().train()
    batch = batch_from_pairs([[1, 2, 3]], [[]], 0)
    got, n = model_sequence_logprobs(model, **batch)
    assert got.tolist() == [0.0] and n.tolist() == [0]
    got.sum().backward()  # must not raise


def test_peft_model_and_disabled_adapter_is_reference():
    peft = pytest.importorskip("peft")
    base = tiny_llama()
    reference = naive_logprob(base, *TARGET)
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    model = peft.get_peft_model(copy.deepcopy(base), config).eval()
    assert lp._split_backbone_and_head(model) is not None  # the head-on-labelled-rows path, not the fallback
    batch = batch_from_pairs([OTHERS[0][0], TARGET[0]], [OTHERS[0][1], TARGET[1]], 0, side="left")
    with torch.no_grad():
        got, _ = model_sequence_logprobs(model, **batch)
        ids = torch.tensor([TARGET[0] + TARGET[1]])
        logits = model(input_ids=ids).logits[0, :-1]
        with model.disable_adapter():
            ref, _ = model_sequence_logprobs(model, **batch)
    policy = logits.log_softmax(-1).gather(-1, ids[0, 1:, None]).squeeze(-1)[len(TARGET[0]) - 1 :].sum()
    assert got[1].item() == pytest.approx(policy.item(), abs=1e-5)
    assert abs(got[1].item() - reference) > 1e-3  # the adapter changes the policy...
    assert ref[1].item() == pytest.approx(reference, abs=1e-5)  # ...and disabling it gives the base


def char_tokenizer():
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    chars = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJ ():.?\n")
    vocab = {"<pad>": 0, **{c: i + 1 for i, c in enumerate(chars)}}
    vocab[" ("] = len(vocab)  # a merge across the context/continuation boundary
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[(" ", "(")], unk_token=None))
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>")


def test_answer_letter_logprobs_scores_each_answer_line():
    tokenizer = char_tokenizer()
    model = tiny_llama(vocab=len(tokenizer))
    prompts = ["what is it? think: b.", "q: a or b? it is a\n"]
    got = answer_letter_logprobs(model, tokenizer, prompts, 3, "\nanswer:", batch_size=4)
    assert got.shape == (2, 3)
    for n, prompt in enumerate(prompts):
        context = tokenizer(prompt + "\nanswer:")["input_ids"]
        for c, letter in enumerate("ABC"):
            continuation = tokenizer(f" ({letter})")["input_ids"]
            assert len(continuation) == 3  # " (", letter, ")"
            assert got[n, c].item() == pytest.approx(naive_logprob(model, context, continuation), abs=1e-5)
