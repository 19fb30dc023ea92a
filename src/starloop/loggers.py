"""Where a run's metrics go while it runs: local files (default), TensorBoard, Weights & Biases.

    logger=local                     <out>/logs/steps.jsonl (every training step, live), <out>/logs/metrics.csv
    logger.tensorboard=true          also <out>/tensorboard/ (needs the tensorboard extra)
    logger=wandb [logger.mode=...]   also a W&B run in <out>/wandb/ (needs the wandb extra); offline by default

The loop calls three hooks: `train_step` (each logged optimizer step), `validation` (the metrics lines of an
iteration and its validation generations) and `close`. Everything logged here is also in the run folder
(metrics.jsonl, iter_k/...), so a logger never holds the only copy of a result. Steps are numbered across
iterations (`global_step`) from the step counts of finished iterations, so a resumed run continues the
numbering instead of restarting it.
"""

from __future__ import annotations

import csv
import io as _io
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

from starloop import io
from starloop.config import Config, to_dict
from starloop.errors import ConfigError

log = logging.getLogger("starloop.logger")

# Validation keys sent to TensorBoard / W&B (the rest stay in metrics.jsonl).
VAL_KEYS = ("accuracy", "ci_low", "ci_high", "parse_rate", "degenerate_rate", "truncated_rate", "mean_tokens",
            "n", "kept", "kept_fraction", "solved_fraction", "rationalized", "positive_weight_on_wrong", "train_loss",
            "train_accuracy")
# Columns of the sample table (the rationale is cut to TABLE_TEXT characters).
TABLE_COLUMNS = ("iteration", "question_id", "language", "subject", "gold", "extracted", "correct", "degenerate",
                 "n_tokens", "rationale")
TABLE_TEXT = 2000


class Backend:
    """One destination. Subclasses override what they record; the defaults do nothing."""

    def train_step(self, iteration: int, global_step: int, record: dict) -> None: ...

    def validation(self, iteration: int, lines: Sequence[dict], samples: list[dict]) -> None: ...

    def close(self) -> None: ...


def _drop_partial_line(path: Path) -> None:
    """Cut an append-only log back to its last complete line (SIGKILL can stop a write half way)."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


def _drop_unfinished_steps(path: Path, out: Path) -> None:
    """Drop the step lines of iterations whose training did not finish: a resumed run trains them again from
    step 1 and logs those steps anew (no (iteration, step) appears twice)."""
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)

    def finished(line: str) -> bool:
        try:
            k = int(json.loads(line)["iteration"])
        except (ValueError, KeyError, TypeError):
            return True  # not a step line: left as it is
        return (out / f"iter_{k}" / "train" / io.DONE).exists()

    keep = [ln for ln in lines if finished(ln)]
    if len(keep) != len(lines):
        io.write_text(path, "".join(keep))


class LocalFiles(Backend):
    """<out>/logs/steps.jsonl appended as training goes (tail -f it) and <out>/logs/metrics.csv."""

    def __init__(self, out: Path):
        self.folder = out / "logs"
        self.folder.mkdir(parents=True, exist_ok=True)
        _drop_partial_line(self.folder / "steps.jsonl")  # a kill mid-append; the resumed run appends after it
        _drop_unfinished_steps(self.folder / "steps.jsonl", out)
        self.steps = open(self.folder / "steps.jsonl", "a", encoding="utf-8")  # noqa: SIM115 (closed in close)
        self.rows: dict[tuple[int, str], dict] = {}
        if (self.folder / "metrics.csv").exists():  # a resumed run keeps the rows it already wrote
            with open(self.folder / "metrics.csv", encoding="utf-8", newline="") as f:
                self.rows = {(int(r["iteration"]), r["language"]): r for r in csv.DictReader(f)}

    def train_step(self, iteration: int, global_step: int, record: dict) -> None:
        self.steps.write(json.dumps({"iteration": iteration, "global_step": global_step, **record}) + "\n")
        self.steps.flush()

    def validation(self, iteration: int, lines: Sequence[dict], samples: list[dict]) -> None:
        for line in lines:
            self.rows[(iteration, str(line["language"]))] = dict(line)
        cols = list(dict.fromkeys(k for r in self.rows.values() for k in r))
        buf = _io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        for key in sorted(self.rows):
            w.writerow(self.rows[key])
        io.write_text(self.folder / "metrics.csv", buf.getvalue())

    def close(self) -> None:
        self.steps.close()


class TensorBoard(Backend):
    """Scalars train/* by global step, val/<language>/* by iteration, and the sample table as text."""

    def __init__(self, out: Path, cfg: Config):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("logger.tensorboard", "needs the tensorboard package: pip install "
                                                    "'starloop[tensorboard]'") from None
        self.writer = SummaryWriter(log_dir=str(out / "tensorboard"))
        self.writer.add_text("config", "```yaml\n" + _yaml(to_dict(cfg)) + "\n```", 0)

    def train_step(self, iteration: int, global_step: int, record: dict) -> None:
        for k, v in _numbers(record).items():
            if k != "step":
                self.writer.add_scalar(f"train/{k}", v, global_step)
        self.writer.add_scalar("train/iteration", iteration, global_step)

    def validation(self, iteration: int, lines: Sequence[dict], samples: list[dict]) -> None:
        for line in lines:
            for k, v in _numbers({k: line.get(k) for k in VAL_KEYS}).items():
                self.writer.add_scalar(f"val/{line['language']}/{k}", v, iteration)
        if samples:
            head = "| " + " | ".join(TABLE_COLUMNS) + " |\n|" + "---|" * len(TABLE_COLUMNS) + "\n"
            body = "".join("| " + " | ".join(_cell(s.get(c)) for c in TABLE_COLUMNS) + " |\n" for s in samples)
            self.writer.add_text("val/samples", head + body, iteration)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandB(Backend):
    """A W&B run in <out>/wandb (the research notes' CustomWandBLogger): config, train/* by global step,
    val/* by iteration and a `val/samples` table per iteration. Offline by default; `wandb sync` uploads."""

    def __init__(self, out: Path, cfg: Config):
        try:
            import wandb
        except ImportError:
            raise ConfigError("logger", "logger=wandb needs the wandb package: pip install 'starloop[wandb]'") \
                from None
        self.wandb = wandb
        lc = cfg.logger
        mode = os.environ.get("WANDB_MODE") or lc.mode  # the usual wandb switch wins over the config
        id_file = out / "logs" / "wandb_run_id"
        run_id = id_file.read_text().strip() if id_file.exists() else _new_run_id()
        io.write_text(id_file, run_id + "\n")
        sweep = (out.parent / "multirun.yaml").exists()  # a job of a -m sweep: group the jobs together
        self.run = wandb.init(
            project=lc.project, entity=lc.entity, mode=mode, dir=str(out), id=run_id, resume="allow",
            name=f"{out.parent.name}/{out.name}" if sweep else out.name, group=out.parent.name if sweep else None,
            config=to_dict(cfg), settings=wandb.Settings(console="off"),
        )
        self.run.define_metric("train/global_step")
        self.run.define_metric("train/*", step_metric="train/global_step")
        self.run.define_metric("iteration")
        self.run.define_metric("val/*", step_metric="iteration")
        if mode == "offline":
            log.info("wandb: offline run in %s; upload it later with `wandb sync %s`", self.run.dir,
                     Path(self.run.dir).parent)

    def train_step(self, iteration: int, global_step: int, record: dict) -> None:
        data = {f"train/{k}": v for k, v in _numbers(record).items() if k != "step"}
        self.run.log({**data, "train/global_step": global_step, "train/iteration": iteration})

    def validation(self, iteration: int, lines: Sequence[dict], samples: list[dict]) -> None:
        data: dict[str, Any] = {"iteration": iteration}
        main = "all" if any(ln["language"] == "all" for ln in lines) else None
        for line in lines:
            values = _numbers({k: line.get(k) for k in VAL_KEYS})
            if main is None or line["language"] == main:  # the headline numbers: val/accuracy, ...
                data.update({f"val/{k}": v for k, v in values.items()})
            if len(lines) > 1 and line["language"] != "all":
                data.update({f"val/{line['language']}/{k}": v for k, v in values.items()})
        if samples:
            table = self.wandb.Table(columns=list(TABLE_COLUMNS))
            for s in samples:
                table.add_data(*[s.get(c) for c in TABLE_COLUMNS])
            data["val/samples"] = table
        self.run.log(data)

    def close(self) -> None:
        self.run.finish()
        # finish() can return before the service has written everything to the run file; teardown waits
        # for it (and a later run in this process, e.g. the next job of a sweep, starts a fresh service).
        self.wandb.teardown()


class RunLogger:
    """The loop's single entry point: fans out to the configured backends; a context manager."""

    def __init__(self, cfg: Config, out: str | os.PathLike):
        self.out = Path(out)
        self.table_rows = cfg.logger.table_rows
        self.backends: list[Backend] = []
        from starloop import distributed

        if not distributed.is_main():  # one launch, one log: the main process logs for all
            self._offsets: dict[int, int] = {}
            return
        try:
            self.backends.append(LocalFiles(self.out))
            if cfg.logger.tensorboard:
                self.backends.append(TensorBoard(self.out, cfg))
            if cfg.logger.name == "wandb" and cfg.logger.mode != "disabled":
                self.backends.append(WandB(self.out, cfg))
        except BaseException:
            self.close()
            raise
        self._offsets: dict[int, int] = {}

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def global_step(self, iteration: int, step: int) -> int:
        """Step counted over all iterations: the steps of the finished iterations before `iteration` + step."""
        if iteration not in self._offsets:
            total = 0
            for k in range(1, iteration):
                done = self.out / f"iter_{k}" / "train" / io.DONE
                if done.exists():
                    try:
                        total += int(json.loads(done.read_text(encoding="utf-8")).get("steps") or 0)
                    except (ValueError, AttributeError):
                        pass
            self._offsets[iteration] = total
        return self._offsets[iteration] + step

    def train_step(self, iteration: int, record: dict) -> None:
        g = self.global_step(iteration, int(record.get("step", 0)))
        for b in self.backends:
            b.train_step(iteration, g, record)

    def validation(self, iteration: int, lines: Sequence[dict] | dict, folder: str | os.PathLike | None = None) -> None:
        """The metrics lines of an iteration; `folder` (iter_k/val) supplies the sample table."""
        lines = [lines] if isinstance(lines, dict) else list(lines)
        samples = sample_rows(Path(folder) / "generations.csv", iteration, self.table_rows) if folder else []
        for b in self.backends:
            b.validation(iteration, lines, samples)

    def close(self) -> None:
        for b in self.backends:
            try:
                b.close()
            except Exception as e:  # noqa: BLE001 (a logger failing at exit must not hide the run's outcome)
                log.warning("closing %s failed: %s", type(b).__name__, e)
        self.backends = []


def open_logger(cfg: Config, out: str | os.PathLike) -> RunLogger:
    return RunLogger(cfg, out)


def sample_rows(path: Path, iteration: int, limit: int) -> list[dict]:
    """The first `limit` validation samples by question id (the same questions every iteration)."""
    from starloop.records import read_samples

    if limit <= 0 or not path.exists():
        return []
    samples = sorted(read_samples(path), key=lambda s: (s.question_id, s.sample_index))[:limit]
    return [{"iteration": iteration, "question_id": s.question_id, "language": s.language, "subject": s.subject,
             "gold": s.gold, "extracted": s.extracted, "correct": bool(s.correct), "degenerate": s.degenerate,
             "n_tokens": s.n_tokens, "rationale": s.rationale[:TABLE_TEXT]} for s in samples]


def _new_run_id() -> str:
    """A W&B run id (saved in the run folder so that a resumed run continues the same W&B run)."""
    import secrets
    import string

    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))


def _numbers(d: dict) -> dict[str, float]:
    out = {}
    for k, v in d.items():
        if isinstance(v, (bool, int, float)):
            out[k] = float(v)
    return out


def _cell(v: Any) -> str:
    return str("" if v is None else v).replace("|", "\\|").replace("\n", " ")[:300]


def _yaml(d: dict) -> str:
    import yaml

    return yaml.safe_dump(d, sort_keys=False, allow_unicode=True)
