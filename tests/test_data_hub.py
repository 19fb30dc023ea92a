"""Hub sources through their real conversion code, fed from local fixtures in the hub schema (no network)."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pytest

from starloop.config import DataConfig
from starloop.data import aligned_id, available_languages, load_questions
from starloop.errors import ConfigError, DataError, StarloopError

HUB = Path(__file__).parent / "fixtures" / "hub"


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    # Belt and braces: even a bug that reached for the hub would fail fast instead of downloading.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def _load(name: str, split: str, language: str = "en", path: Path | str | None = None, **kw):
    path = HUB / name if path is None else path
    return load_questions(DataConfig(name=name, language=language, path=str(path), **kw), split)


def _by_id(qs):
    return {q.id: q for q in qs}


def test_cais_mmlu():
    val = _by_id(_load("cais-mmlu", "val"))
    assert len(val) == 5 and len(_load("cais-mmlu", "dev")) == 5
    q = val["cais-mmlu/val/virology/0001"]
    assert q.answer == 0 and q.choices[0] == "Epstein-Barr virus" and q.source == "cais-mmlu"
    train, held, test = _load("cais-mmlu", "train"), _load("cais-mmlu", "heldout"), _load("cais-mmlu", "test")
    assert sorted(q.id for q in train + held) == sorted(q.id for q in test)


def test_mmmlu_yoruba_aliases_and_text():
    ids = None
    for alias in ("YO_NG", "yo_ng", "yo", "yor", "Yoruba"):
        qs = _load("mmmlu", "test", alias)
        assert ids is None or [q.id for q in qs] == ids
        ids = [q.id for q in qs]
    qs = _by_id(_load("mmmlu", "test", "YO_NG"))
    assert len(qs) == 8
    q = qs["mmmlu/yo/test/high_school_geography/0000"]
    assert q.question == "Kí ni olú-ìlú orílẹ̀-èdè Nàìjíríà?" and q.gold_letter == "B" and q.language == "yo"
    # The fixture spells one question in NFD; loaded, every field is NFC.
    assert not unicodedata.is_normalized(
        "NFC", (HUB / "mmmlu/test/mmlu_YO-NG.csv").read_text(encoding="utf-8")
    )
    for q in qs.values():
        assert all(unicodedata.is_normalized("NFC", t) for t in (q.question, *q.choices))
    assert qs["mmmlu/yo/test/anatomy/0001"].question == unicodedata.normalize("NFC", "Ẹ̀yà ara wo la fi ń mí?")


def test_mmmlu_has_only_test_so_val_is_held_out():
    test, train, val = (
        _load("mmmlu", "test", "yo"),
        _load("mmmlu", "train", "yo"),
        _load("mmmlu", "val", "yo"),
    )
    assert {q.id for q in val} == {q.id for q in _load("mmmlu", "heldout", "yo")}
    assert not {q.id for q in train} & {q.id for q in val}
    assert len(train) + len(val) == len(test)
    with pytest.raises(ConfigError, match="no 'dev' split"):
        _load("mmmlu", "dev", "yo")


def test_mmmlu_all_languages_from_local_copy():
    assert len(available_languages("mmmlu")) == 14
    qs = _load("mmmlu", "test", "all")
    assert sorted({q.language for q in qs}) == ["sw", "yo"] and len(qs) == 13
    with pytest.raises(ConfigError, match="data.language.*data.path"):
        load_questions(DataConfig(name="mmmlu", language="all"), "test")
    with pytest.raises(DataError, match="no files for language de"):
        _load("mmmlu", "test", "DE_DE")


def test_global_mmlu():
    dev = _by_id(_load("global-mmlu", "dev", "yo"))
    test = _by_id(_load("global-mmlu", "test", "yo"))
    assert len(dev) == 5 and len(test) == 8
    # Ids follow sample_id (`anatomy/test/1`), so they line up with cais/mmlu and the bundled MMLU.
    assert test["global-mmlu/yo/test/anatomy/0001"].choices[0] == "Ẹ̀dọ̀fóró"
    assert aligned_id(test["global-mmlu/yo/test/anatomy/0001"]) == "test/anatomy/0001"
    assert len(_load("global-mmlu", "val", "yoruba")) == 4


def test_afrimmlu_choices_as_string_or_list():
    yo = _by_id(_load("afrimmlu", "val", "yor"))
    assert len(yo) == 5
    q = yo["afrimmlu/yo/val/anatomy/0000"]
    assert q.choices == tuple(unicodedata.normalize("NFC", c) for c in ("Ẹ̀dọ̀fóró", "Ọkàn", "Ikùn", "Ẹ̀dọ̀"))
    assert q.answer == 0
    both = _load("afrimmlu", "test", "all")
    assert sorted({q.language for q in both}) == ["en", "yo"] and len(both) == 16
    en = _by_id(_load("afrimmlu", "test", "eng"))
    assert en["afrimmlu/en/test/anatomy/0000"].choices[1] == "Heart"


def test_parquet_and_save_to_disk_copies_load_the_same(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [json.loads(line) for line in (HUB / "global-mmlu/yo/test.jsonl").read_text("utf-8").splitlines()]
    (tmp_path / "pq" / "yo").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "pq" / "yo" / "test-00000-of-00001.parquet")
    want = [(q.id, q.question, q.choices, q.answer) for q in _load("global-mmlu", "test", "yo")]
    got = [
        (q.id, q.question, q.choices, q.answer) for q in _load("global-mmlu", "test", "yo", tmp_path / "pq")
    ]
    assert got == want

    cais = {
        s: [json.loads(line) for line in (HUB / f"cais-mmlu/all/{s}.jsonl").read_text("utf-8").splitlines()]
        for s in ("dev", "validation", "test")
    }
    datasets.DatasetDict({s: datasets.Dataset.from_list(r) for s, r in cais.items()}).save_to_disk(
        str(tmp_path / "disk")
    )
    for split in ("val", "train", "dev"):
        want = [(q.id, q.question, q.choices, q.answer) for q in _load("cais-mmlu", split)]
        assert [
            (q.id, q.question, q.choices, q.answer) for q in _load("cais-mmlu", split, path=tmp_path / "disk")
        ] == want


def test_bad_hub_rows(tmp_path):
    rows = [json.loads(line) for line in (HUB / "global-mmlu/yo/test.jsonl").read_text("utf-8").splitlines()]
    rows[3]["sample_id"] = rows[1]["sample_id"]
    bad = tmp_path / "dup" / "yo" / "test.jsonl"
    bad.parent.mkdir(parents=True)
    bad.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    with pytest.raises(
        DataError, match=r"test\.jsonl, row 4: duplicate row id 'high_school_geography/test/1'"
    ):
        _load("global-mmlu", "test", "yo", tmp_path / "dup")

    csv_text = (
        (HUB / "mmmlu/test/mmlu_YO-NG.csv").read_text("utf-8").replace(",C,elementary", ",E,elementary")
    )
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "mmlu_YO-NG.csv").write_text(csv_text, encoding="utf-8")
    with pytest.raises(DataError, match=r"mmlu_YO-NG\.csv, row 7: answer 'E' is not one of"):
        _load("mmmlu", "test", "yo", tmp_path / "m")

    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "test.jsonl").write_text('{"question": "Q?", "subject": "x", "answer": 1}\n', "utf-8")
    with pytest.raises(DataError, match=r"row 1: missing column\(s\) choices"):
        _load("cais-mmlu", "test", path=tmp_path / "c")

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "test.jsonl").write_text(
        '{"question": "Q?", "subject": "x", "choices": "[\'a\', \'b\'", "answer": "A"}\n', "utf-8"
    )
    with pytest.raises(DataError, match="choices is neither a list nor a list literal"):
        _load("afrimmlu", "test", "yo", tmp_path / "a")


def test_unreachable_hub_is_one_line_error(monkeypatch):
    import datasets

    calls = []

    def offline(*args, **kwargs):
        calls.append((args, kwargs))
        raise ConnectionError("Couldn't reach 'openai/MMMLU' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(StarloopError, match=r"could not download openai/MMMLU.*data\.path=") as e:
        load_questions(DataConfig(name="mmmlu", language="YO_NG"), "test")
    assert "\n" not in str(e.value)
    assert calls == [(("openai/MMMLU", "YO_NG"), {"split": "test"})]


def test_hub_download_path_uses_hub_split_names(monkeypatch):
    import datasets

    rows = [
        json.loads(line) for line in (HUB / "cais-mmlu/all/validation.jsonl").read_text("utf-8").splitlines()
    ]
    calls = []

    def fake(repo, config, split):
        calls.append((repo, config, split))
        return rows

    monkeypatch.setattr(datasets, "load_dataset", fake)
    qs = load_questions(DataConfig(name="cais-mmlu"), "validation")
    assert calls == [("cais/mmlu", "all", "validation")]
    assert len(qs) == 5 and qs[0].id.startswith("cais-mmlu/val/")


@pytest.mark.parametrize("name,language", [("mmmlu", "yo"), ("global-mmlu", "yo"), ("afrimmlu", "yor"),
                                           ("cais-mmlu", "en")])
def test_hub_train_never_shares_a_question_with_val(name, language):
    from starloop.data.splits import fingerprint

    train = {fingerprint(q) for q in _load(name, "train", language)}
    for split in ("val", "heldout"):
        try:
            other = _load(name, split, language)
        except ConfigError:  # a source whose val is native and has no test rows to hold out
            continue
        assert not any(fingerprint(q) in train for q in other), split
