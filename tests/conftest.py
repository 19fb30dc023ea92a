"""Shared fixtures: the tiny random model (real tokenizer and chat template) and small questions.

The suite writes nothing into the home folder: caches that libraries would keep there (W&B, matplotlib,
the converted embedded model) go to a folder under the system's temporary directory instead; the
variables are set before any test runs, so the commands the tests start inherit them."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
_CACHE = Path(tempfile.gettempdir()) / f"starloop-tests-{os.getuid()}"
for var, sub in (("WANDB_DIR", "wandb"), ("WANDB_CACHE_DIR", "wandb-cache"), ("WANDB_CONFIG_DIR", "wandb-config"),
                 ("WANDB_DATA_DIR", "wandb-data"), ("WANDB_ARTIFACT_DIR", "wandb-artifacts"),
                 ("MPLCONFIGDIR", "matplotlib"), ("STARLOOP_CACHE", "starloop")):
    os.environ.setdefault(var, str(_CACHE / sub))
    Path(os.environ[var]).mkdir(parents=True, exist_ok=True)


@pytest.fixture(scope="session")
def tiny():
    from starloop.config import ModelConfig
    from starloop.models import load_model

    return load_model(ModelConfig(name="tiny-random"), for_training=True)


@pytest.fixture
def questions():
    from starloop.records import Question

    return [
        Question(id=f"t/{i}", subject="astronomy", language="en", question=f"Which planet is number {i}?",
                 choices=("Mercury", "Venus", "Earth", "Mars"), answer=i % 4)
        for i in range(6)
    ]
