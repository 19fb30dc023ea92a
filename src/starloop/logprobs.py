"""Sequence log-probabilities of causal LMs: the one place where tokens become log pi(z | x).

Conventions (the same as Hugging Face's `labels` argument):
  * `labels` is aligned with `input_ids` ([B, T]) and holds `ignore_index` (-100) on prompt and pad
    positions; the shift is done here: logits at position t score the label at position t + 1.
  * Returned log-probs are summed over the scored tokens of each sequence, in float32, together with the
    number of scored tokens: `(sum_logp [B], n_tokens [B])`. Normalisation (token mean, sequence mean) is
    the loss's business (see `starloop.losses`).

Memory: the [B, T, V] float32 log-softmax is never materialised. `sequence_logprobs` works on chunks of
the sequence; `model_sequence_logprobs` goes further and applies the output head only to the positions
that carry a label, a chunk of rows at a time. Under autograd every chunk is recomputed in backward
(activation checkpointing), so peak memory holds one chunk of float32 logits, not all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

IGNORE_INDEX = -100
T = TypeVar("T")

# Padded tokens per no-grad scoring forward (rows x longest row): activations grow with rows x length (a
# 1.5B model's MLP at 1024 rows of 700 tokens: ~12 GiB per intermediate), so a sampling-sized row count
# alone can fill a card; the same order as the static sampler's max_prefill_tokens.
SCORING_TOKENS = 32768


def _label_logprob(logits: Tensor, labels: Tensor) -> Tensor:
    """log softmax(logits)[label] in (at least) float32; logits [..., V], labels [...] valid ids."""
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    picked = logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def _maybe_checkpoint(fn: Callable[..., Tensor], *args: Tensor | nn.Module) -> Tensor:
    """Run `fn(*args)`; when gradients flow, recompute it in backward instead of storing its
    float32 intermediates (the whole point of chunking)."""
    if torch.is_grad_enabled():
        return checkpoint(fn, *args, use_reentrant=False)
    return fn(*args)


def sequence_logprobs(
    logits: Tensor, labels: Tensor, *, ignore_index: int = IGNORE_INDEX, chunk_size: int = 256
) -> tuple[Tensor, Tensor]:
    """Summed next-token log-probabilities of the labelled tokens.

        sum_logp[b] = sum_{t : labels[b, t+1] != ignore} log softmax(logits[b, t])[labels[b, t+1]]
        n_tokens[b] = #{t : labels[b, t+1] != ignore}

    Args:
        logits: [B, T, V] causal-LM outputs (half dtypes are upcast to float32 one chunk at a time).
        labels: [B, T] token ids aligned with the inputs, `ignore_index` where not scored.
        chunk_size: sequence positions per chunk.
    Returns:
        (sum_logp [B] float32 (float64 for float64 logits), n_tokens [B] int64).
    """
    shift_logits = logits[:, :-1]
    shift_labels = labels[:, 1:]
    mask = shift_labels != ignore_index
    safe_labels = shift_labels.masked_fill(~mask, 0)
    total = logits.new_zeros(logits.shape[0], dtype=torch.promote_types(logits.dtype, torch.float32))
    for start in range(0, shift_labels.shape[1], chunk_size):
        sl = slice(start, start + chunk_size)
        per_token = _maybe_checkpoint(_label_logprob, shift_logits[:, sl], safe_labels[:, sl])
        total = total + per_token.masked_fill(~mask[:, sl], 0.0).sum(dim=1)
    return total, mask.sum(dim=1)


def position_ids_from_mask(attention_mask: Tensor) -> Tensor:
    """Positions that ignore padding: cumsum(mask) - 1, clamped at 0 ([B, T]).

    With these, a left-padded sequence sees the same rotary positions as the unpadded one."""
    return (attention_mask.long().cumsum(dim=-1) - 1).clamp(min=0)


def _head_logprob(head: nn.Module, hidden: Tensor, labels: Tensor) -> Tensor:
    return _label_logprob(head(hidden), labels)


def _split_backbone_and_head(model: nn.Module) -> tuple[nn.Module, nn.Module] | None:
    """(backbone, output head) of a Hugging Face causal LM, plain or PEFT-wrapped; None when the head
    cannot be applied on its own safely (logit soft-capping or scaling, prompt-learning PEFT, a model
    sharded with FSDP2), in which
    case callers fall back to the model's full forward."""
    from torch.distributed.fsdp import FSDPModule

    if isinstance(model, FSDPModule):
        return None  # sharded (FSDP2): weights are gathered by the root module's forward, so call it whole
    peft_config = getattr(model, "active_peft_config", None)
    if peft_config is not None and getattr(peft_config, "is_prompt_learning", False):
        return None  # virtual tokens are prepended inside PeftModel.forward
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(lm, "config", None)
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    for attr in ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier"):
        if getattr(text_config, attr, None) is not None:
            return None  # the head alone would give different logits than the model's forward
    backbone = getattr(lm, "base_model", None)  # PreTrainedModel.base_model: the decoder stack
    head = lm.get_output_embeddings() if hasattr(lm, "get_output_embeddings") else None
    if backbone is None or backbone is lm or head is None:
        return None
    return backbone, head


def model_sequence_logprobs(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    labels: Tensor,
    *,
    ignore_index: int = IGNORE_INDEX,
    chunk_size: int = 1024,
) -> tuple[Tensor, Tensor]:
    """Run a causal LM and return `(sum_logp [B] float32, n_tokens [B] int64)` of the labelled tokens.

    Padding may be on either side, with any pad id: positions come from the attention mask (so a
    left-padded row equals the unpadded row), and labels on padding are ignored whatever they hold.
    The output head is applied only to the `N` labelled positions, `chunk_size` rows at a time, from the
    backbone's hidden states ([N, H] -> [chunk, V] float32 logits); models whose head cannot be split off
    (see `_split_backbone_and_head`) go through the full forward and `sequence_logprobs`.
    A PEFT model with `disable_adapter()` active gives the reference policy's log-probs.

    Args:
        input_ids, attention_mask, labels: [B, T]; labels aligned with input_ids (shifted here).
    """
    labels = labels.masked_fill(attention_mask == 0, ignore_index)
    position_ids = position_ids_from_mask(attention_mask)
    parts = _split_backbone_and_head(model)
    if parts is None:
        logits = model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        ).logits
        return sequence_logprobs(logits, labels, ignore_index=ignore_index)

    backbone, head = parts
    hidden = backbone(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
    ).last_hidden_state[:, :-1]  # [B, T-1, H]: position t predicts token t + 1
    shift_labels = labels[:, 1:]
    mask = shift_labels != ignore_index
    # One nonzero (a single device-to-host wait for N); indexing with its result, not with the mask again,
    # picks the same positions in the same (row-major) order without another wait.
    rows, cols = mask.nonzero(as_tuple=True)  # sequence and position of each labelled token, [N] each
    selected = hidden[rows, cols]  # [N, H]
    targets = shift_labels[rows, cols]  # [N]
    total = hidden.new_zeros(input_ids.shape[0], dtype=torch.promote_types(hidden.dtype, torch.float32))
    for start in range(0, targets.shape[0], chunk_size):
        sl = slice(start, start + chunk_size)
        per_token = _maybe_checkpoint(_head_logprob, head, selected[sl], targets[sl])
        total = total.index_add(0, rows[sl], per_token)
    if targets.shape[0] == 0:
        total = total + hidden[:, :0].sum()  # keep the graph connected for an all-ignored batch
    return total, mask.sum(dim=1)


def pad_sequences(sequences: Sequence[Sequence[int]], pad_value: int, *, side: str = "right") -> Tensor:
    """Pad lists of ints to a [B, T_max] long tensor on the left or right."""
    width = max((len(s) for s in sequences), default=0)
    out = torch.full((len(sequences), width), pad_value, dtype=torch.long)
    for i, seq in enumerate(sequences):
        if len(seq) == 0:
            continue
        values = torch.as_tensor(list(seq), dtype=torch.long)
        if side == "left":
            out[i, width - len(seq) :] = values
        else:
            out[i, : len(seq)] = values
    return out


def batch_from_pairs(
    contexts: Sequence[Sequence[int]],
    continuations: Sequence[Sequence[int]],
    pad_token_id: int,
    *,
    side: str = "right",
) -> dict[str, Tensor]:
    """Tokenised (context, continuation) pairs -> padded `input_ids`, `attention_mask`, `labels`
    where only the continuation tokens are labelled."""
    ids = [list(c) + list(z) for c, z in zip(contexts, continuations, strict=True)]
    labels = [[IGNORE_INDEX] * len(c) + list(z) for c, z in zip(contexts, continuations, strict=True)]
    return {
        "input_ids": pad_sequences(ids, pad_token_id, side=side),
        "attention_mask": pad_sequences([[1] * len(s) for s in ids], 0, side=side),
        "labels": pad_sequences(labels, IGNORE_INDEX, side=side),
    }


def rows_within_budget(lengths: Sequence[int], start: int, max_rows: int, max_tokens: int) -> int:
    """Rows of the next scoring batch, `lengths[start:]` taken in order: at most `max_rows`, and while
    rows x (longest length among them) stays within `max_tokens`; at least one row."""
    longest, n = 0, 0
    for length in lengths[start : start + max(1, max_rows)]:
        longest = max(longest, length)
        if n and (n + 1) * longest > max_tokens:
            break
        n += 1
    return max(n, 1)


def budgeted_batches(lengths: Sequence[int], batch_size: int, what: str,
                     run: Callable[[int, int], T]) -> Iterator[tuple[int, int, T]]:
    """(start, n, run(start, n)) for consecutive batches of the rows whose lengths are `lengths`, each of at
    most `batch_size` rows and `SCORING_TOKENS` padded tokens (`rows_within_budget`); when run raises
    out-of-memory, the rows of the failed batch and the token budget are halved and the batch runs again
    (any other error is raised)."""
    from starloop.oom import halved_batch_size

    max_tokens, start = SCORING_TOKENS, 0
    while start < len(lengths):
        n = rows_within_budget(lengths, start, batch_size, max_tokens)
        try:
            got = run(start, n)
        except (torch.OutOfMemoryError, RuntimeError) as e:
            batch_size = halved_batch_size(e, n, what)
            max_tokens = max(1, max_tokens // 2)
            continue
        yield start, n, got
        start += n


@torch.no_grad()
def answer_letter_logprobs(
    model: nn.Module,
    tokenizer,
    prompts_with_rationale: Sequence[str],
    n_choices: int,
    answer_prefix: str,
    *,
    letter_format: str = " ({})",
    letters: str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    add_special_tokens: bool = False,
    batch_size: int = 32,
) -> Tensor:
    """log p(answer_line(X) | x, z) for every letter X: the scores behind the likelihood rewards.

        out[n, c] = log p( letter_format.format(letters[c]) | prompts_with_rationale[n] + answer_prefix )

    Each prompt already holds the question x and the sampled rationale z (as text, chat template
    applied or not; `add_special_tokens` says whether the tokenizer should add BOS). The continuation's
    tokens are those of `tok(context + continuation)` beyond `tok(context)` (lm-evaluation-harness's
    rule), so merges at the boundary are scored as the model would see them. The values are raw
    sequence log-probs, not renormalised over the `n_choices` letters. Returns [N, n_choices] float32.
    A forward takes at most `batch_size` rows and `SCORING_TOKENS` padded tokens; on out-of-memory the
    rows of the failed batch and the token budget are halved and the batch retried.
    """
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    contexts, continuations = [], []
    for prompt in prompts_with_rationale:
        context = prompt + answer_prefix
        ctx_ids = tokenizer(context, add_special_tokens=add_special_tokens)["input_ids"]
        for letter in letters[:n_choices]:
            whole = tokenizer(context + letter_format.format(letter), add_special_tokens=add_special_tokens)
            whole_ids = whole["input_ids"]
            contexts.append(whole_ids[: len(ctx_ids)])
            continuations.append(whole_ids[len(ctx_ids) :])

    def score(start: int, n: int) -> Tensor:  # the reward scores do not depend on batching
        batch = batch_from_pairs(contexts[start : start + n], continuations[start : start + n], pad_id, side="left")
        return model_sequence_logprobs(model, **{k: v.to(device) for k, v in batch.items()})[0]

    lengths = [len(c) + len(z) for c, z in zip(contexts, continuations, strict=True)]
    scores = [got for _, _, got in budgeted_batches(lengths, batch_size, "scoring rewards", score)]
    if not scores:
        return torch.zeros(0, n_choices)
    return torch.cat(scores).view(len(prompts_with_rationale), n_choices).cpu()
