"""`load_questions(cfg, split)`: resolve the source and languages, load native splits, derive the logical one.

Sources (`starloop.data.sources.SOURCES`): the bundled Hendrycks-layout archives (`mmlu`, `mmlu-afr`), or any
Hendrycks folder or file given as `data.path`; and the hub datasets, downloaded or read from a local copy.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Any

from starloop.data import hendrycks, local_files
from starloop.data.hub import convert_rows, remote_rows
from starloop.data.languages import (
    check_source,
    normalize_language,
    resolve_language,
    source_config,
    source_languages,
)
from starloop.data.rows import Collector, aligned_id, clean_subject, id_prefix, native_split
from starloop.data.sources import SPECS
from starloop.data.splits import (
    apply_limit,
    check_split,
    check_subjects,
    filter_subjects,
    heldout_ids,
    seeded_order,
)
from starloop.errors import ConfigError, DataError
from starloop.records import Question


def bundled_path(name: str) -> Path:
    """Path of a bundled source's archive inside the installed package (`<name>.tar.xz`)."""
    res = importlib.resources.files("starloop") / "resources" / "data" / f"{name}.tar.xz"
    return Path(str(res))


class _CsvSource:
    """Hendrycks-layout CSVs: the bundled archives, or a folder/file given as data.path."""

    def __init__(self, name: str, path: Path | None, language: str, subjects: Any):
        self.name = name
        root = path if path is not None else bundled_path(name)
        self.where = str(root)
        self.files = hendrycks.scan(root)
        if not self.files:
            raise DataError(root, "no MMLU CSV files (<subject>_<split>.csv) found")
        # Held-out cuts are made per subject, so files of other subjects need not even be read.
        keep = check_subjects(subjects, {clean_subject(f.subject) for f in self.files})
        if keep is not None:
            self.files = [f for f in self.files if clean_subject(f.subject) in keep]
        suffixes = sorted({f.language for f in self.files})
        self.suffix: dict[str, str | None] = {}  # language code -> file suffix (None: every file)
        if suffixes == [""]:
            # One language, unnamed: the files are in whatever language was asked for (English by default).
            all_ = str(language).strip().lower() == "all"
            code = "en" if all_ else normalize_language(language)
            if code is None:
                raise ConfigError("data.language", f"unknown language {language!r}")
            if path is None and code != "en":
                resolve_language(name, language)  # raises the helpful "mmlu has: en" error
            self.suffix[code] = None
            self.languages = [code]
        else:
            known = source_languages(name)
            for sfx in suffixes:
                code = "en" if sfx == "" else (normalize_language(sfx) or sfx)
                self.suffix[code] = sfx
            order = [c for c in known if c in self.suffix] + sorted(c for c in self.suffix if c not in known)
            self.suffix = {c: self.suffix[c] for c in order}
            self.languages = resolve_language(name, language, list(self.suffix))
        # Translations are partitioned by the English rows, so every language holds out the same questions.
        self.reference = "en" if len(self.suffix) > 1 and "en" in self.suffix else None
        self._cache: dict[tuple[str, str], list[Question]] = {}

    def native_splits(self, lang: str) -> set[str]:
        return hendrycks.splits_of(self.files, self.suffix[lang])

    def load(self, lang: str, split: str) -> list[Question]:
        if (lang, split) not in self._cache:
            c = Collector(id_prefix(self.name, lang), split, lang, self.name)
            self._cache[lang, split] = hendrycks.load_split(
                self.files, split, self.suffix[lang], c, self.where
            )
            if not self._cache[lang, split]:  # every file of the split empty (or blank lines only)
                raise DataError(self.where, f"the {split!r} files hold no rows")
        return self._cache[lang, split]


class _HubSource:
    """A hub dataset: downloaded through `datasets`, or read from a local copy at data.path."""

    def __init__(self, name: str, path: Path | None, language: str):
        self.name, self.spec, self.reference = name, SPECS[name], None
        self._cache: dict[tuple[str, str], list[Question]] = {}
        configs = source_languages(name)
        self.units: dict[str, list[local_files.Unit]] | None = None
        self.where = str(path) if path is not None else f"hf://datasets/{self.spec.repo}"
        want_all = str(language).strip().lower() == "all"
        if path is None:
            if want_all and len(configs) > 1:
                raise ConfigError(
                    "data.language",
                    f"all for {name} needs data.path=<local copy with one folder or file per "
                    f"language>; downloading all {len(configs)} languages is not done implicitly",
                )
            self.languages = resolve_language(name, "en" if want_all else language)
            return
        groups = local_files.units_by_language(local_files.discover(path), configs)
        detected = [c for c in configs if c in groups]
        if want_all:
            if not detected and len(configs) > 1:
                raise ConfigError(
                    "data.language",
                    f"all: no file or folder under {path} names a {name} language "
                    f"(e.g. {', '.join(list(configs.values())[:3])})",
                )
            self.languages = detected or list(configs)
            self.units = {c: groups.get(c, []) + groups.get(None, []) for c in self.languages}
        else:
            self.languages = resolve_language(name, language)
            code = self.languages[0]
            units = groups.get(code) or groups.get(None) or []
            if not units:
                raise DataError(
                    path,
                    f"no files for language {code} ({source_config(name, code)}); "
                    f"languages found: {', '.join(detected) or 'none'}",
                )
            self.units = {code: units}

    def _local_name(self, split: str) -> str:
        """The split a local copy's file names say for our native `split` (MMLU-Pro's `validation` files
        hold its `dev` split)."""
        return native_split(self.spec.splits.get(split, split)) or split

    def native_splits(self, lang: str) -> set[str]:
        if self.units is None:
            return set(self.spec.splits)
        local = local_files.splits_of(self.units[lang])
        return {s for s in self.spec.splits if self._local_name(s) in local}

    def load(self, lang: str, split: str) -> list[Question]:
        if (lang, split) in self._cache:
            return self._cache[lang, split]
        c = Collector(id_prefix(self.name, lang), split, lang, self.name)
        if self.units is None:
            rows = remote_rows(self.spec, source_config(self.name, lang), split)
        else:
            rows = local_files.read_units(self.units[lang], self._local_name(split))
        convert_rows(self.spec, rows, c)
        if not c.questions:
            raise DataError(self.where, f"split {split!r} of language {lang} has no rows")
        self._cache[lang, split] = c.questions
        return c.questions


def _open(cfg: Any) -> _CsvSource | _HubSource:
    name = check_source(str(cfg.name))
    path = Path(str(cfg.path)).expanduser() if cfg.path not in (None, "") else None
    if name in SPECS:
        return _HubSource(name, path, cfg.language)
    return _CsvSource(name, path, cfg.language, cfg.subjects)


def _split_key(cfg: Any, split: str) -> str:
    keys = ("split", "train_split", "val_split")
    return next((f"data.{k}" for k in keys if str(getattr(cfg, k, "")).lower() == split), "data.split")


def _logical(source: _CsvSource | _HubSource, lang: str, split: str, cfg: Any) -> list[Question]:
    native = source.native_splits(lang)
    if split in ("dev", "test") or (split in ("val", "train") and split in native):
        if split not in native:
            raise ConfigError(
                _split_key(cfg, split),
                f"{source.name} ({source.where}) has no {split!r} split; it has {', '.join(sorted(native))}",
            )
        return source.load(lang, split)
    if "test" not in native:
        raise ConfigError(
            _split_key(cfg, split),
            f"{source.name} has no 'test' split to carve {split!r} from; "
            f"it has {', '.join(sorted(native)) or 'none'}",
        )
    # An aligned set (the bundled African subset) is cut on every language at once: rows that are the
    # same question in any language stay together, whichever language was asked for.
    langs = list(source.suffix) if source.reference else [lang]
    tests = [q for code in langs for q in source.load(code, "test")]
    vals = [q for code in langs if "val" in source.native_splits(code) for q in source.load(code, "val")]
    held = heldout_ids(tests, vals or None, float(cfg.heldout_fraction), int(cfg.seed))
    if split == "train":
        return [q for q in source.load(lang, "test") if aligned_id(q) not in held]
    if not held:
        raise ConfigError(
            "data.heldout_fraction", f"is {cfg.heldout_fraction}: the {split!r} split would be empty"
        )
    return [q for q in source.load(lang, "test") if aligned_id(q) in held]


def load_questions(cfg: Any, split: str) -> list[Question]:
    """Questions of a logical split (train, val, test, dev, heldout) of the source `cfg` (a DataConfig).

    Order: a seeded shuffle (`cfg.seed`) keyed on the aligned id, then the first `cfg.limit` questions
    *per language* (with `data.language=all`, every language gets the same aligned questions, so results
    compare across languages); the same config gives the same list on any machine.
    """
    split = check_split(split, cfg)
    source = _open(cfg)
    questions: list[Question] = []
    for lang in source.languages:
        questions.extend(_logical(source, lang, split, cfg))
    questions = filter_subjects(questions, cfg.subjects)
    questions = seeded_order(questions, int(cfg.seed), source.languages)
    if cfg.limit is None or len(source.languages) == 1:
        return apply_limit(questions, cfg.limit)
    keep = set(apply_limit(list(dict.fromkeys(aligned_id(q) for q in questions)), cfg.limit))
    return [q for q in questions if aligned_id(q) in keep]
