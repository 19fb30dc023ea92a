"""Sweep summaries: after a `-m` sweep, `SweepSummaryCallback` (registered in the primary config) writes
`<sweep>/sweep_summary.md` and `.csv`: one row per job with its overrides and validation accuracy.
"""

from __future__ import annotations

import csv
import io as _io
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from starloop import io
from starloop.markdown import pct, table
from starloop.results import best_line, is_eval, load_eval, load_run

log = logging.getLogger("starloop.report")


SUMMARY_COLUMNS = ["job", "overrides", "status", "iterations", "n", "base_accuracy", "final_iteration",
                   "final_accuracy", "final_ci_low", "final_ci_high", "best_iteration", "best_accuracy",
                   "best_ci_low", "best_ci_high", "path"]


def _job_overrides(job: Path) -> list[str]:
    import yaml

    f = job / ".hydra" / "overrides.yaml"
    if not f.is_file():
        return []
    try:
        data = yaml.safe_load(f.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        return []
    return [str(x) for x in data] if isinstance(data, list) else []


def write_sweep_summary(sweep_dir: str | Path, jobs: Sequence[Sequence[str]] | None = None) -> tuple[Path, Path]:
    """<sweep>/sweep_summary.md and .csv: one row per job (its overrides, final and best validation accuracy).

    `jobs`: the override list of each job, in job order (from the sweeper); None = the job folders found.
    Only the overrides that differ between jobs are shown in the Markdown table.
    """
    sweep = Path(sweep_dir)
    if jobs is None:
        found = [p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()] if sweep.is_dir() else []
        jobs = [_job_overrides(p) for p in sorted(found, key=lambda p: int(p.name))]
        nums = [int(p.name) for p in sorted(found, key=lambda p: int(p.name))]
    else:
        nums = list(range(len(jobs)))
    varying = _varying_overrides(jobs)
    rows = []
    for num, overrides in zip(nums, jobs):
        folder = sweep / str(num)
        run = load_run(folder, str(num)) if folder.is_dir() else None
        lines = run.lines() if run else []
        status = run.status if run else "missing (never started)"
        if run and not lines and is_eval(folder):  # a `starloop eval -m` sweep: one result per job
            lines = [{"iteration": 0, **load_eval(folder).metrics}]
            status = run.status if run.failed else "done"
        best, last = best_line(lines), (lines[-1] if lines else None)
        rows.append({
            "job": num, "overrides": " ".join(o for o in overrides if o.partition("=")[0] in varying),
            "status": status,
            "iterations": run.planned_iterations if run else None,
            "n": last["n"] if last else None, "base_accuracy": lines[0]["accuracy"] if lines else None,
            "final_iteration": last["iteration"] if last else None,
            "final_accuracy": last["accuracy"] if last else None,
            "final_ci_low": last["ci_low"] if last else None, "final_ci_high": last["ci_high"] if last else None,
            "best_iteration": best["iteration"] if best else None,
            "best_accuracy": best["accuracy"] if best else None,
            "best_ci_low": best["ci_low"] if best else None, "best_ci_high": best["ci_high"] if best else None,
            "path": str(folder), "_full": " ".join(overrides),
        })
    buf = _io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=SUMMARY_COLUMNS + ["all_overrides"], lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({**{k: r[k] for k in SUMMARY_COLUMNS}, "all_overrides": r["_full"]})
    csv_path = sweep / "sweep_summary.csv"
    io.write_text(csv_path, buf.getvalue())

    def acc(r: dict, which: str) -> str:
        if r[f"{which}_accuracy"] is None:
            return "–"
        return (f"{100 * r[f'{which}_accuracy']:.1f}% [{100 * r[f'{which}_ci_low']:.1f}, "
                f"{100 * r[f'{which}_ci_high']:.1f}] (iter {r[f'{which}_iteration']})")

    md = [f"# Sweep summary: `{sweep}`", "",
          (f"{len(rows)} jobs; the varying overrides are shown per job (all overrides are in "
          "sweep_summary.csv). Accuracy: validation split, 95% Wilson interval."), ""]
    md += table(["job", "overrides", "status", "n", "iteration 0", "final", "best", "folder"],
                 [[r["job"], f"`{r['overrides']}`" if r["overrides"] else "–", r["status"], r["n"] or "–",
                   pct(r["base_accuracy"]), acc(r, "final"), acc(r, "best"), f"`{r['path']}`"] for r in rows])
    finished = [r for r in rows if r["final_accuracy"] is not None]
    if finished:
        best = max(r["final_accuracy"] for r in finished)
        top = [r for r in finished if r["final_accuracy"] == best]
        if len(top) == 1:
            head = (f"Highest final validation accuracy: job {top[0]['job']} "
                    f"(`{top[0]['overrides'] or 'no overrides'}`), {acc(top[0], 'final')}.")
        else:
            head = (f"Highest final validation accuracy: jobs {', '.join(str(r['job']) for r in top)} tie at "
                    f"{pct(best)}.")
        md += ["", head + " Picked on the validation split; jobs whose intervals overlap are not told apart by "
                          "this sweep."]
    failed = [r for r in rows if str(r["status"]).startswith("failed")]
    if failed:
        md += ["", f"{len(failed)} job(s) failed; their error is in the status column and in `<job>/FAILED`."]
    md += ["", f"Plots: `starloop report {sweep}`.", ""]
    md_path = sweep / "sweep_summary.md"
    io.write_text(md_path, "\n".join(md))
    return md_path, csv_path


def _varying_overrides(jobs: Sequence[Sequence[str]]) -> set[str]:
    """Override keys whose value is not the same in every job (all keys when there is one job)."""
    values: dict[str, set[str]] = {}
    for overrides in jobs:
        for o in overrides:
            k, _, v = o.partition("=")
            values.setdefault(k, set()).add(v)
    if len(jobs) < 2:
        return set(values)
    return {k for k, v in values.items() if len(v) > 1 or any(k not in {o.partition("=")[0] for o in j}
                                                              for j in jobs)}


def sweep_overrides(config) -> list[list[str]]:
    """Every job's overrides, in job order, exactly as Hydra's basic sweeper expands them (its own code)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    params = OmegaConf.select(config, "hydra.sweeper.params") or {}
    args = [f"{k}={v}" for k, v in OmegaConf.to_container(params).items()]  # type: ignore[union-attr]
    args += list(OmegaConf.select(config, "hydra.overrides.task") or [])
    parsed = OverridesParser.create().parse_overrides(args)
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


try:  # the callback base class is part of hydra-core, a dependency; keep `report` importable without it
    from hydra.experimental.callback import Callback as _Callback
except ImportError:  # pragma: no cover
    _Callback = object  # type: ignore[assignment,misc]


class SweepSummaryCallback(_Callback):  # type: ignore[misc,valid-type]
    """Writes <sweep>/sweep_summary.md and .csv when every job of a `-m` sweep has finished."""

    def on_multirun_end(self, config, **kwargs: Any) -> None:
        sweep = Path(config.hydra.sweep.dir)
        try:
            jobs = sweep_overrides(config)
        except Exception as e:  # noqa: BLE001 (a sweep syntax not parsed here: list the job folders)
            log.debug("sweep overrides not expanded (%s); listing job folders instead", e)
            jobs = None
        md, _ = write_sweep_summary(sweep, jobs)
        log.info("sweep summary: %s (and .csv)", md)


