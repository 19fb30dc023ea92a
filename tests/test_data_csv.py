"""Local hendrycks-layout CSV folders and files: layouts, CSV quirks, and one clear DataError per bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from starloop.config import DataConfig
from starloop.data import load_questions
from starloop.errors import ConfigError, DataError

GOOD = b'What is 2+2?,3,4,5,6,B\n"Which, with comma?",a,b,c,d,A\n'


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _load(path: Path, split: str = "test", **kw):
    return load_questions(DataConfig(path=str(path), **kw), split)


def test_subfolder_and_flat_layouts(tmp_path):
    _write(tmp_path / "sub" / "test" / "algebra_test.csv", GOOD)
    _write(tmp_path / "sub" / "val" / "algebra_val.csv", GOOD)
    _write(tmp_path / "sub" / "README.txt", b"not data")
    _write(tmp_path / "flat" / "algebra_test.csv", GOOD)
    _write(tmp_path / "flat" / "biology_test.csv", GOOD)
    sub = _load(tmp_path / "sub")
    assert sorted(q.id for q in sub) == ["mmlu/test/algebra/0000", "mmlu/test/algebra/0001"]
    assert {q.id for q in _load(tmp_path / "sub", "val")} == {
        "mmlu/val/algebra/0000",
        "mmlu/val/algebra/0001",
    }
    q = next(q for q in sub if q.id.endswith("0001"))
    assert q.question == "Which, with comma?" and q.choices == ("a", "b", "c", "d") and q.answer == 0
    assert len(_load(tmp_path / "flat")) == 4


def test_single_file_path(tmp_path):
    f = _write(tmp_path / "virology_val.csv", GOOD)
    assert _load(f, "val", limit=1)[0].id.startswith("mmlu/val/virology/")
    # Any other name: its rows are the `test` split of subject <stem>, and train/val are cut from it.
    mine = _write(tmp_path / "my_questions.csv", b"".join(b"Q%d?,a,b,c,d,C\n" % i for i in range(20)))
    assert len(_load(mine)) == 20
    train, val = _load(mine, "train"), _load(mine, "val")
    assert len(val) == 2 and len(train) == 18 and {q.subject for q in val} == {"my_questions"}


def test_embedded_newlines_crlf_whitespace_and_bom(tmp_path):
    data = (
        b'\xef\xbb\xbf"First line\r\nsecond line",  padded  ,b,c,d,A\r\n'
        b'"Multi\nline ""quoted""",x,"y\r\nz",w,v,C\r\n'
        b"\r\n"
    )
    qs = sorted(_load(_write(tmp_path / "s_test.csv", data)), key=lambda q: q.id)
    assert len(qs) == 2
    assert qs[0].question == "First line\nsecond line"
    assert qs[0].choices[0] == "padded"
    assert qs[1].question == 'Multi\nline "quoted"'
    assert qs[1].choices[1] == "y\nz" and qs[1].answer == 2


def test_three_choice_rows_and_nfc(tmp_path):
    decomposed = "Ogu\u0301n e\u0323\u0300?"  # NFD spelling
    data = f"{decomposed},a,b,c,,B\n".encode()
    (q,) = _load(_write(tmp_path / "s_test.csv", data))
    assert q.choices == ("a", "b", "c")
    assert q.question == "Ogún \u1eb9\u0300?"


@pytest.mark.parametrize(
    "data, row, message",
    [
        (b"What?,a,b,c,d,B\nWhat?,a,b,c,B\n", 2, "expected 6 columns"),
        (b"What?,a,b,c,d,E\n", 1, "not one of the choice letters"),
        (b"What?,a,b,c,d,B\n   ,a,b,c,d,B\n", 2, "empty question"),
        (b"What?,a,,,,A\n", 1, "fewer than 2 non-empty choices"),
        (b'What?,a,b,c,d,B\n"Caf\xe9?",a,b,c,d,A\n', 2, "not valid UTF-8"),
        (b'What?,a,b,c,d,B\n"unterminated,a,b,c,d,A\n', 2, "malformed CSV"),
        (b"What?,a,b,,d,C\n", 1, "points at an empty choice"),
    ],
    ids=["columns", "answer", "empty-question", "two-choices", "utf8", "quote", "empty-answer-choice"],
)
def test_bad_rows_name_file_and_row(tmp_path, data, row, message):
    f = _write(tmp_path / "virology_test.csv", data)
    with pytest.raises(DataError, match=message) as e:
        _load(tmp_path)
    text = str(e.value)
    assert str(f) in text and f"row {row}" in text and "\n" not in text
    assert e.value.row == row


def test_duplicate_ids_from_flat_and_subfolder_copies(tmp_path):
    _write(tmp_path / "virology_test.csv", GOOD)
    _write(tmp_path / "test" / "virology_test.csv", GOOD)
    with pytest.raises(DataError, match=r"duplicate question id mmlu/test/virology/0000.*row 1"):
        _load(tmp_path)


def test_missing_paths_and_splits(tmp_path):
    with pytest.raises(DataError, match="no such file or folder"):
        _load(tmp_path / "nope")
    _write(tmp_path / "empty" / "notes.txt", b"")
    with pytest.raises(DataError, match="no MMLU CSV files"):
        _load(tmp_path / "empty")
    _write(tmp_path / "d" / "virology_test.csv", GOOD)
    with pytest.raises(ConfigError, match="no 'dev' split"):
        _load(tmp_path / "d", "dev")
    _write(tmp_path / "v" / "virology_val.csv", GOOD)
    with pytest.raises(ConfigError, match="no 'test' split"):
        _load(tmp_path / "v", "train")


def test_language_suffixed_folder(tmp_path):
    # The mmlu-afr layout from a local folder: English unsuffixed, translations suffixed.
    _write(tmp_path / "virology_val.csv", GOOD)
    _write(tmp_path / "virology_val_zu.csv", b"Yini 2+2?,3,4,5,6,B\nKuphi?,a,b,c,d,A\n")
    zu = load_questions(DataConfig(name="mmlu-afr", path=str(tmp_path), language="zu"), "val")
    assert sorted(q.id for q in zu) == ["mmlu-afr/zu/val/virology/0000", "mmlu-afr/zu/val/virology/0001"]
    both = load_questions(DataConfig(name="mmlu-afr", path=str(tmp_path), language="all"), "val")
    assert sorted({q.language for q in both}) == ["en", "zu"]
    with pytest.raises(ConfigError, match="data.language"):
        load_questions(DataConfig(name="mmlu-afr", path=str(tmp_path), language="xh"), "val")
