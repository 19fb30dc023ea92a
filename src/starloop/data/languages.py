"""Language codes: which languages each data source has, and how `data.language` maps onto them.

Every question carries one short code (ISO 639-1 where it exists, else ISO 639-3: `yo`, `zu`, `nso`, `fil`)
whatever the source calls the language (`YO_NG` in openai/MMMLU, `yor` in AfriMMLU, `yo` in Global-MMLU), so
per-language results compare across sources. `data.language` accepts the short code, the ISO 639-3 code, the
English name or the source's own config name, case-insensitively.
"""

from __future__ import annotations

from starloop.errors import ConfigError

# code, ISO 639-3, English name. One table for every source below.
_TABLE = """
af afr Afrikaans
am amh Amharic
ar ara Arabic
bm bam Bambara
bn ben Bengali
cs ces Czech
de deu German
ee ewe Ewe
el ell Greek
en eng English
es spa Spanish
fa fas Persian
fil fil Filipino
fr fra French
ha hau Hausa
he heb Hebrew
hi hin Hindi
id ind Indonesian
ig ibo Igbo
it ita Italian
ja jpn Japanese
ko kor Korean
ky kir Kyrgyz
lg lug Luganda
ln lin Lingala
lt lit Lithuanian
mg mlg Malagasy
ms msa Malay
ne nep Nepali
nl nld Dutch
nso nso Sepedi
ny nya Chichewa
om orm Oromo
pl pol Polish
pt por Portuguese
ro ron Romanian
ru rus Russian
rw kin Kinyarwanda
si sin Sinhala
sn sna Shona
so som Somali
sr srp Serbian
st sot Sesotho
sv swe Swedish
sw swa Swahili
te tel Telugu
tn tsn Setswana
tr tur Turkish
ts tso Xitsonga
tw twi Twi
uk ukr Ukrainian
vi vie Vietnamese
wo wol Wolof
xh xho isiXhosa
yo yor Yoruba
zh zho Chinese
zu zul isiZulu
"""
_ISO3: dict[str, str] = {}
_NAMES: dict[str, str] = {}
for _line in _TABLE.strip().splitlines():
    _code, _iso3, _name = _line.split(maxsplit=2)
    _ISO3[_code] = _iso3
    _NAMES[_code] = _name

def iso3(code: str) -> str:
    """ISO 639-3 code of one of our language codes (`yo` -> `yor`)."""
    return _ISO3[code]


def source_languages(name: str) -> dict[str, str]:
    """Per source: our code -> the source's own name for it (hub config, or CSV file-name suffix)."""
    from starloop.data.sources import SOURCES

    return SOURCES[name].languages


def check_source(name: str) -> str:
    """The source name, or ConfigError on `data.name` listing the valid ones."""
    from starloop.data.sources import SOURCES

    if name not in SOURCES:
        raise ConfigError("data.name", f"unknown data source {name!r}; choose one of {', '.join(SOURCES)}")
    return name


def available_languages(name: str) -> list[str]:
    """Language codes of a source (the ones `data.language=all` loads for a bundled source)."""
    return list(source_languages(check_source(name)))


def language_name(code: str) -> str:
    """English name of a language code (`yo` -> `Yoruba`); the code itself if unknown."""
    return _NAMES.get(code, code)


def normalize_language(value: str, known: list[str] | None = None) -> str | None:
    """Our code for `value` (code, ISO 639-3 code, English name or a source config name), or None.

    `known` restricts the answer to those codes (a source's languages) so that `value` may also be one of
    that source's config names.
    """
    v = str(value).strip().lower().replace("-", "_")
    candidates = known if known is not None else list(_NAMES)
    for code in candidates:
        aliases = {code, _ISO3.get(code, code), _NAMES.get(code, code).lower()}
        for source_langs in _all_source_languages():
            if source_langs.get(code):
                aliases.add(source_langs[code].lower())
        if v in aliases:
            return code
    return None


def resolve_language(name: str, value: str, local_codes: list[str] | None = None) -> list[str]:
    """The language codes `data.language=value` selects for source `name`.

    `all` selects every language: the source's list, or `local_codes` (those found in a local copy) when given.
    A language the source lacks raises ConfigError on `data.language`, listing those it has.
    """
    langs = local_codes if local_codes is not None else available_languages(name)
    if str(value).strip().lower() == "all":
        return list(langs)
    code = normalize_language(value, sorted(set(available_languages(name)) | set(langs)))
    if code is None or code not in langs:
        shown = ", ".join(f"{c} ({language_name(c)})" for c in langs)
        raise ConfigError("data.language", f"{value!r} is not a language of {name}; it has: {shown}, or all")
    return [code]


def source_config(name: str, code: str) -> str:
    """The source's own name for a language code (hub config name or file suffix)."""
    return source_languages(name)[code]


def _all_source_languages() -> list[dict[str, str]]:
    from starloop.data.sources import SOURCES

    return [s.languages for s in SOURCES.values()]
