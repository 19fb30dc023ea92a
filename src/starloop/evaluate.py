"""Evaluation: generative chain-of-thought accuracy and letter-logit accuracy, on any split.

`generate` mode renders the chat prompt, samples (greedy by default) a rationale, extracts the
answer letter and scores it. `logit` mode is lm-evaluation-harness's `mmlu` task: one forward pass
over the plain-text prompt and a comparison of the log-probabilities of " A", " B", ...
(ties go to the first option, as `argmax` does in the harness).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from starloop import degenerate, extract, prompts
from starloop.config import Config, PromptConfig
from starloop.records import LETTERS, Question, Sample
from starloop.sampler_support import CPU_BATCH_SIZE
from starloop.sampling import Generation, Sampler, sample_seed

FewShot = Sequence[Question] | Mapping[str, Sequence[Question]]


def progress_bar(total: int, desc: str, enabled: bool = True):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, dynamic_ncols=True)


def chat_prompts(tokenizer, questions: Sequence[Question], pcfg: PromptConfig, few_shot: FewShot = (),
                 hints=None):
    """Rendered chat prompts (text) for questions; `hints` (letters) for rationalization."""
    out = []
    for i, q in enumerate(questions):
        hint = hints[i] if hints is not None else None
        msgs = prompts.build_messages(q, strategy=pcfg.strategy, system=pcfg.system,
                                      few_shot=shots_for(few_shot, q), hint=hint)
        out.append(prompts.render_chat(tokenizer, msgs))
    return out


def generation_to_sample(q: Question, prompt: str, gen: Generation, sample_index: int,
                     expected_language: str | None = None, hinted: bool = False,
                     repetition: str = "no_answer") -> Sample:
    """Extract, flag and score one generation; `repetition` is the `scoring.repetition` policy.

    `extracted` holds the scored letter; when the policy overrides extraction (a loop), the letter
    extraction read is kept in `extra["extracted_raw"]`.
    """
    raw = extract.extract_answer(gen.text, n_choices=len(q.choices), choices=q.choices, language=q.language,
                                 truncated=gen.truncated)
    flags = degenerate.detect(gen.text, truncated=gen.truncated, expected_language=expected_language,
                              extracted=raw)
    letter, flags = degenerate.apply_repetition_policy(raw, flags, repetition)
    status = extract.answer_status(letter, q.gold_letter)
    return Sample(
        question_id=q.id, sample_index=sample_index, prompt=prompt, rationale=gen.text,
        extracted=letter or "", gold=q.gold_letter, correct=status == "correct", status=status,
        hinted=hinted, language=q.language, subject=q.subject, n_tokens=gen.n_tokens,
        truncated=gen.truncated, degenerate=degenerate.format_flags(flags),
        extra={"extracted_raw": raw} if raw != letter else {},
    )


def expected_language(q: Question, pcfg: PromptConfig) -> str | None:
    """The language a rationale should be written in under the prompt strategy."""
    return q.language if pcfg.strategy == "native" else "en"


def sample_questions(sampler: Sampler, tokenizer, questions: Sequence[Question], pcfg: PromptConfig, *,
                     k: int, seed_parts: tuple, max_new_tokens: int, temperature: float, top_p: float,
                     hints: Sequence[str] | None = None, few_shot: FewShot = (),
                     progress: bool = True, desc: str = "sampling", repetition: str = "no_answer") -> list[Sample]:
    """k scored samples per question, each seeded by (seed_parts, question id, sample index).

    Generation sees the few-shot examples (prompt.few_shot) and, with `hints`, the rationalization hint;
    the saved sample holds the zero-shot, hint-free prompt: the one a trained model answers (STaR
    fine-tunes on the question alone, without the few-shot exemplars). `repetition`: the
    `scoring.repetition` policy.
    """
    plain = chat_prompts(tokenizer, questions, pcfg)
    shown = chat_prompts(tokenizer, questions, pcfg, few_shot=few_shot, hints=hints) \
        if hints is not None or few_shot else plain
    flat_q = [(qi, j) for qi in range(len(questions)) for j in range(k)]
    seeds = [sample_seed(*seed_parts, questions[qi].id, j) for qi, j in flat_q]
    bar = progress_bar(len(flat_q), desc, progress)
    t0 = time.time()
    gens = sampler.generate([shown[qi] for qi, _ in flat_q], seeds, max_new_tokens=max_new_tokens,
                            temperature=temperature, top_p=top_p, progress=bar.update)
    bar.set_postfix(tok_s=f"{sum(g.n_tokens for g in gens) / max(time.time() - t0, 1e-9):.0f}")
    bar.close()
    return [
        generation_to_sample(questions[qi], plain[qi], g, j, expected_language(questions[qi], pcfg),
                         hinted=hints is not None, repetition=repetition)
        for (qi, j), g in zip(flat_q, gens)
    ]


def add_forced_choice(model, tokenizer, samples: Sequence[Sample], questions: dict[str, Question],
                      pcfg: PromptConfig, batch_size: int = 16) -> list[Sample]:
    """The label-free cross-check of extraction: the model's forced choice after each output.

    For each sample the model scores `prompt + output + "\n" + <answer line up to the letter>` followed
    by each letter of its question (`starloop.logprobs.answer_letter_logprobs`, the scores behind the
    answer-likelihood rewards; the answer line is the one the prompt asked for, in its language), and
    `extra["forced_choice"]` gets the most likely letter (ties: the first). Unlike the rewards, the
    output keeps its own answer statements: the question put to the model is which option its text
    committed to, so a letter extraction read that disagrees points at the extractor. Samples are
    updated in place and returned.
    """
    from starloop.logprobs import answer_letter_logprobs
    from starloop.oom import release_cached_memory
    from starloop.scoring import answer_template

    groups: dict[tuple[str, int], list[int]] = {}
    for i, s in enumerate(samples):
        q = questions[s.question_id]
        groups.setdefault((expected_language(q, pcfg) or "en", len(q.choices)), []).append(i)
    for (lang, n), idx in groups.items():
        prefix, fmt = answer_template(lang)
        ctx = [samples[i].prompt + samples[i].rationale for i in idx]
        logp = answer_letter_logprobs(model, tokenizer, ctx, n, "\n" + prefix, letter_format=fmt,
                                      batch_size=batch_size)
        for i, row in zip(idx, logp):
            samples[i].extra["forced_choice"] = LETTERS[int(torch.argmax(row))]
    release_cached_memory(model)
    return list(samples)


@torch.no_grad()
def letter_logit_samples(model, tokenizer, questions: Sequence[Question], few_shot: FewShot = (),
                         batch_size: int = 8, progress: bool = True) -> list[Sample]:
    """lm-eval-harness style MMLU scoring: argmax over log p(" X" | prompt) for each choice letter.

    A forward takes at most `batch_size` rows and `logprobs.SCORING_TOKENS` padded tokens; on CUDA
    out-of-memory the rows of the failed batch and the token budget are halved and the batch retried (logged).
    """
    from starloop import logprobs
    from starloop.oom import release_cached_memory

    device = model.device
    texts_all = [prompts.letter_prompt(q, few_shot=shots_for(few_shot, q)) for q in questions]
    # Longest first, in batches of similar length: far less padding, and any OOM comes early.
    lengths = [len(tokenizer(t, add_special_tokens=True)["input_ids"]) for t in texts_all]
    order = sorted(range(len(questions)), key=lambda i: -lengths[i])
    results: list[Sample | None] = [None] * len(questions)
    bar = progress_bar(len(questions), "letter-logit eval", progress)
    prev_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        def forward(start: int, n: int) -> torch.Tensor:
            texts = [texts_all[i] for i in order[start : start + n]]
            enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=True)
            ids, attn = enc["input_ids"].to(device), enc["attention_mask"].to(device)
            return _last_logits(model, ids, attn, (attn.cumsum(-1) - 1).clamp(min=0))

        ordered = [lengths[i] for i in order]
        for start, n, logits in logprobs.budgeted_batches(ordered, batch_size, "evaluating letter logits", forward):
            idx = order[start : start + n]
            texts = [texts_all[i] for i in idx]
            logp = logits.log_softmax(-1)
            for r, i in enumerate(idx):
                q = questions[i]
                letter_ids = [_single_token(tokenizer, " " + L) for L in q.letters]
                scores = torch.stack([logp[r, t] for t in letter_ids])
                pick = int(torch.argmax(scores))  # first maximum: ties go to the first option
                letter = q.letters[pick]
                status = extract.answer_status(letter, q.gold_letter)
                results[i] = Sample(question_id=q.id, sample_index=0, prompt=texts[r], rationale="",
                                    extracted=letter, gold=q.gold_letter, correct=status == "correct",
                                    status=status, language=q.language, subject=q.subject,
                                    extra={f"logp_{L}": float(s) for L, s in zip(q.letters, scores)})
            bar.update(len(idx))
    finally:
        tokenizer.padding_side = prev_side
        bar.close()
    release_cached_memory(model)
    return results  # type: ignore[return-value]


def _last_logits(model, ids, attn, pos) -> torch.Tensor:
    """Float32 logits of the last position only (the output head runs on one position per row)."""
    try:
        out = model(input_ids=ids, attention_mask=attn, position_ids=pos, logits_to_keep=1)
    except TypeError:  # transformers < 4.50 names it num_logits_to_keep; very old ones have neither
        out = model(input_ids=ids, attention_mask=attn, position_ids=pos)
    return out.logits[:, -1, :].float()


def _single_token(tokenizer, text: str) -> int:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        # Every tokenizer we ship or target encodes " A".." J" as one token; fail loudly otherwise.
        raise ValueError(f"continuation {text!r} is {len(ids)} tokens for this tokenizer")
    return ids[0]


def few_shot_examples(cfg: Config) -> dict[str, list[Question]]:
    """The prompt.few_shot worked examples per language: the first dev questions (seeded order) of each
    language of the run, so that a question's examples are in its own language."""
    from starloop.data import load_questions

    out: dict[str, list[Question]] = {}
    if cfg.prompt.few_shot:
        for q in load_questions(cfg.data, "dev"):
            shots = out.setdefault(q.language, [])
            if len(shots) < cfg.prompt.few_shot:
                shots.append(q)
    return out


def shots_for(few_shot: FewShot, q: Question) -> Sequence[Question]:
    """The few-shot examples of `q`: its language's from a mapping, or the one list for every question."""
    return few_shot.get(q.language, ()) if isinstance(few_shot, Mapping) else few_shot


def evaluate_questions(model, tokenizer, questions: Sequence[Question], cfg: Config,
                       few_shot: FewShot = (), seed_parts: tuple = ("eval",)) -> list[Sample]:
    """Score `questions` under cfg.eval (mode, decoding) and cfg.prompt."""
    from starloop.fast_sampling import make_sampler

    if cfg.eval.mode == "logit":

        return letter_logit_samples(model, tokenizer, questions, few_shot=few_shot,
                                    batch_size=cfg.eval.batch_size or CPU_BATCH_SIZE, progress=cfg.progress)
    sampler = make_sampler(cfg.model, model, tokenizer, cfg.eval.batch_size)
    return sample_questions(sampler, tokenizer, questions, cfg.prompt, k=1, seed_parts=(cfg.seed, *seed_parts),
                            max_new_tokens=cfg.eval.max_new_tokens, temperature=cfg.eval.temperature,
                            top_p=cfg.eval.top_p, few_shot=few_shot, progress=cfg.progress, desc="eval",
                            repetition=cfg.scoring.repetition)


def eval_samples_path(out: Path) -> Path:
    """The sample table of a `starloop eval` folder: generations.csv, the name every sample table has
    (results.csv in folders written before the names were made one)."""
    out = Path(out)
    return out / "results.csv" if not (out / "generations.csv").exists() and (out / "results.csv").exists() \
        else out / "generations.csv"


def write_eval(out: Path, samples: Sequence[Sample], summary: dict, cfg_dict: dict) -> None:
    """generations.csv (one row per question), metrics.json and config.yaml, each written atomically."""
    from omegaconf import OmegaConf

    from starloop.io import write_json, write_text
    from starloop.records import write_samples

    write_samples(out / "generations.csv", list(samples))
    write_json(out / "metrics.json", summary)
    write_text(out / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(cfg_dict)))


def eval_questions(cfg: Config, log=None) -> list[Question]:
    """The questions `starloop eval` scores: data.split, at most eval.limit of them (said in the log)."""
    from starloop.data import load_questions

    qs = load_questions(cfg.data, cfg.data.split)
    if cfg.eval.limit is not None and len(qs) > cfg.eval.limit:
        if log is not None:
            log.info("evaluating %d of the %d %s questions (eval.limit=%d, sized for a laptop CPU; eval.limit=null "
                     "for all)", cfg.eval.limit, len(qs), cfg.data.split, cfg.eval.limit)
        qs = qs[: cfg.eval.limit]
    return qs


def run_eval(cfg: Config) -> dict:
    """`starloop eval`: evaluate the model (or a checkpoint) on cfg.data.split; write results under cfg.out."""
    import contextlib
    import json
    import logging

    from starloop.config import to_dict
    from starloop.lora_merge import merged_lora
    from starloop.metrics import format_table, group_summaries, summarize
    from starloop.models import load_adapter, load_model, resolve_checkpoint

    log = logging.getLogger("starloop.eval")
    out = Path(cfg.out)
    questions = eval_questions(cfg, log)  # bad data fails before the model loads
    adapter = resolve_checkpoint(cfg.checkpoint) if cfg.checkpoint else None
    few_shot = few_shot_examples(cfg)
    t0 = time.time()
    model, tok = load_model(cfg.model)
    if adapter is not None:
        model = load_adapter(model, adapter)
        model.eval()
    t_load = time.time() - t0
    # The adapter merged into the weights for the passes (not for vLLM, which loads the adapter itself).
    merge = merged_lora(model) if adapter is not None and cfg.model.sampler != "vllm" else contextlib.nullcontext()
    with merge:
        samples = evaluate_questions(model, tok, questions, cfg, few_shot=few_shot)
        if cfg.eval.mode == "generate" and cfg.scoring.cross_check:
            add_forced_choice(model, tok, samples, {q.id: q for q in questions}, cfg.prompt,
                              cfg.eval.batch_size or CPU_BATCH_SIZE)
    summary = summarize(samples)
    summary.update(mode=cfg.eval.mode, split=cfg.data.split, data=cfg.data.name, model=cfg.model.name,
                   checkpoint=cfg.checkpoint, wall_s=round(time.time() - t0, 2), load_s=round(t_load, 2))
    summary["by_language"] = group_summaries(samples, "language")
    summary["by_subject"] = group_summaries(samples, "subject")
    from starloop.runstate import claim

    claim(out, "eval", to_dict(cfg), {cfg.data.split: questions})  # inputs valid, model loaded: the folder is ours
    write_eval(out, samples, summary, to_dict(cfg))
    if len(summary["by_language"]) > 1:
        log.info("\n%s", format_table(summary["by_language"], "language",
                                      ("n", "accuracy", "parse_rate", "degenerate_rate",
                                       "cross_check_disagreement")))
    log.info("\n%s", format_table(summary["by_subject"], "subject"))
    log.info("results written to %s", out.resolve())
    flat = {k: v for k, v in summary.items() if not k.startswith("by_")}
    print(json.dumps(flat), flush=True)
    return summary
