"""experiments/jobs.sh, the job runner experiments/qwen15.sh and experiments/results.sh share: which job lines
run, which are skipped as finished, and what each leaves behind (a stand-in records the starloop commands)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

JOBS = Path(__file__).resolve().parents[1] / "experiments" / "jobs.sh"
FAKE = """#!/usr/bin/env bash
out=${@: -1}; out=${out#out=}
echo "$*" >> "$(dirname "$out")/calls"
[ "$1" = fail ] && exit 3
mkdir -p "$out"
"""


def pool(tmp_path: Path, lines: list[str], only: str = ".", par: int = 2) -> subprocess.CompletedProcess:
    fake = tmp_path / "fake-starloop"
    fake.write_text(FAKE)
    fake.chmod(0o755)
    script = f'source "{JOBS}"; export R; printf "%s\\n" "$@" | pool {par}'
    return subprocess.run(["bash", "-c", script, "_", *lines], capture_output=True, text=True, timeout=60,
                          check=False, env=os.environ | {"R": str(tmp_path), "STARLOOP": str(fake), "ONLY": only})


def test_pool_runs_what_only_picks_and_skips_what_finished(tmp_path):
    (tmp_path / "done-before.done").touch()  # finished in an earlier call
    (tmp_path / "eval-before").mkdir()
    (tmp_path / "eval-before" / "metrics.json").write_text("{}")  # an evaluation that wrote its metrics
    r = pool(tmp_path, ["a|train x=1", "b|eval y=2", "done-before|train z=3", "eval-before|eval w=4",
                        "other|train v=5", "broken|fail u=6"], only="^(a|b|done-before|eval-before|broken)$")
    assert r.returncode == 0, r.stderr
    calls = sorted((tmp_path / "calls").read_text().splitlines())
    assert calls == [f"eval y=2 out={tmp_path}/b", f"fail u=6 out={tmp_path}/broken", f"train x=1 out={tmp_path}/a"]
    assert "skip done-before" in r.stdout and "skip eval-before" in r.stdout
    rows = {line.split("\t")[0]: line.split("\t") for line in (tmp_path / "jobs.tsv").read_text().splitlines()}
    assert set(rows) == {"a", "b", "broken"}
    assert rows["a"][1] == "0" and rows["broken"][1] == "3"
    assert rows["a"][3] == f"starloop train x=1 out={tmp_path}/a"
    assert (tmp_path / "a.done").exists() and (tmp_path / "b.done").exists()
    assert not (tmp_path / "broken.done").exists()  # a failed run is run again next time
    assert (tmp_path / "a.log").exists()
