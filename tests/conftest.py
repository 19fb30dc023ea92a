"""Shared fixtures: the tiny random model (real tokenizer and chat template) and small questions."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


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
