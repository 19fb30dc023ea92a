"""Prompts: chat messages that ask for a rationale ending in one answer line, and the lm-eval letter prompt.

Everything here is a pure function of a `Question` (no tokenizer, except `render_chat`). The
per-language table `LANGUAGES` is the single home of the localized answer line ("The answer is (X)",
"Ìdáhùn náà ni (X)", ...), the instruction, the rationalization hint and the regexes that
`starloop.extract` uses to find the answer line again: prompt and extraction cannot drift apart.

Rationalization (STaR): `build_messages(q, hint="B")` adds one hint paragraph to the last user
message and changes nothing else; the training prompt is `build_messages(q)` (no hint), so callers
rebuild it rather than strip the hint from text.

Translations for the low-resource languages were drafted without a native-speaker review: they are
kept short, and extraction always accepts the English answer line too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from starloop.errors import ConfigError
from starloop.records import Question

STRATEGIES = ("native", "english", "translate")


@dataclass(frozen=True)
class Language:
    """Localized strings of one language. `{X}` in `line`/`hint` stands for the option letter.

    `patterns` are regexes, matched case-insensitively on text folded by `extract.fold` (NFKC,
    combining marks removed), that end right where the letter follows ("answer is", "jibu ni").
    `script` names the writing system that `degenerate` expects the rationale in.
    """

    code: str
    name: str
    script: str
    line: str
    instruction: str
    hint: str
    patterns: tuple[str, ...] = ()


def _L(code: str, name: str, script: str, line: str, instruction: str, hint: str, *patterns: str) -> Language:
    return Language(code, name, script, line, instruction, hint, patterns)


# Noun ... verb with up to three words between ("the correct answer to this question is").
_GAP = r"(?:[^\S\n]+[^\s.!?;:()\[\]]+){0,3}?[^\S\n]+"

LANGUAGES: dict[str, Language] = {lang.code: lang for lang in [
    _L("en", "English", "Latin", "The answer is ({X})",
       'Think step by step, then finish with a single line: "The answer is (X)", where X is the letter '
       "of the correct option.",
       "Hint: the correct answer is ({X}). Explain step by step why, without mentioning this hint.",
       rf"answer{_GAP}(?:is|would\s+be|should\s+be|must\s+be|will\s+be)",
       rf"(?:correct|best|right|final)\s+(?:option|choice|letter){_GAP}(?:is|would\s+be)",
       r"answer\s*[*_]*\s*[:=]", r"(?:correct|best|right|final)\s+(?:option|choice)\s*[*_]*\s*:"),
    _L("yo", "Yoruba", "Latin", "Ìdáhùn náà ni ({X})",
       'Ronú ní ìgbésẹ̀ ní ìgbésẹ̀, lẹ́yìn náà parí pẹ̀lú ìlà kan: "Ìdáhùn náà ni (X)", níbi tí X jẹ́ lẹ́tà '
       "ìdáhùn tó tọ́.",
       "Ìtọ́kasí: ìdáhùn tó tọ́ ni ({X}). Ṣàlàyé ìdí rẹ̀ ní ìgbésẹ̀ ní ìgbésẹ̀, láì mẹ́nuba ìtọ́kasí yìí.",
       rf"ìdáhùn{_GAP}(?:ni|jẹ́)", r"ìdáhùn\s*:"),
    _L("sw", "Swahili", "Latin", "Jibu ni ({X})",
       'Fikiri hatua kwa hatua, kisha malizia kwa mstari mmoja: "Jibu ni (X)", ambapo X ni herufi ya '
       "chaguo sahihi.",
       "Kidokezo: jibu sahihi ni ({X}). Eleza kwa nini hatua kwa hatua, bila kutaja kidokezo hiki.",
       rf"jibu{_GAP}ni", r"jibu\s*:"),
    _L("zu", "Zulu", "Latin", "Impendulo ithi ({X})",
       'Cabanga isinyathelo ngesinyathelo, bese uqeda ngomugqa owodwa: "Impendulo ithi (X)", lapho u-X '
       "eyinhlamvu yempendulo efanele.",
       "Isikhombisi: impendulo efanele ithi ({X}). Chaza isinyathelo ngesinyathelo ukuthi kungani, "
       "ungasikhulumi lesi sikhombisi.",
       rf"impendulo{_GAP}(?:ithi|ngu|yi|ngo)-?", r"impendulo\s*:"),
    _L("xh", "Xhosa", "Latin", "Impendulo ngu-({X})",
       'Cinga inyathelo ngenyathelo, emva koko ugqibe ngomgca omnye: "Impendulo ngu-(X)", apho u-X '
       "ingunobumba wempendulo echanekileyo.",
       "Icebiso: impendulo echanekileyo ngu-({X}). Chaza inyathelo ngenyathelo ukuba kutheni, "
       "ungalikhankanyi eli cebiso.",
       rf"impendulo{_GAP}(?:ithi|ngu|yi|ngo)-?", r"impendulo\s*:"),
    _L("af", "Afrikaans", "Latin", "Die antwoord is ({X})",
       'Dink stap vir stap en eindig dan met een reël: "Die antwoord is (X)", waar X die letter van die '
       "korrekte opsie is.",
       "Wenk: die korrekte antwoord is ({X}). Verduidelik stap vir stap waarom, sonder om hierdie wenk "
       "te noem.",
       rf"antwoord{_GAP}is", r"antwoord\s*:"),
    _L("am", "Amharic", "Ethiopic", "መልሱ ({X}) ነው",
       'ደረጃ በደረጃ አስብ፣ ከዚያም በአንድ መስመር ጨርስ፦ "መልሱ (X) ነው"፣ X የትክክለኛው አማራጭ ፊደል ነው።',
       "ፍንጭ፦ ትክክለኛው መልስ ({X}) ነው። ይህን ፍንጭ ሳትጠቅስ ለምን እንደሆነ ደረጃ በደረጃ አብራራ።",
       # "መልሱ (B) ነው": the letter sits between the noun and the copula.
       r"መልሱ", r"መልስ"),
    _L("ig", "Igbo", "Latin", "Azịza ya bụ ({X})",
       "Chee echiche nzọụkwụ n'nzọụkwụ, wee jiri otu ahịrị mechie: "
       '"Azịza ya bụ (X)", ebe X bụ mkpụrụedemede nhọrọ ziri ezi.',
       "Ndụmọdụ: azịza ziri ezi bụ ({X}). Kọwaa nzọụkwụ n'nzọụkwụ ihe mere o ji bụrụ ya, ekwughị maka "
       "ndụmọdụ a.",
       rf"azịza{_GAP}bụ", r"azịza\s*:"),
    _L("sn", "Shona", "Latin", "Mhinduro ndeye ({X})",
       'Funga nhanho nenhanho, wozopedzisa nemutsara mumwe: "Mhinduro ndeye (X)", apo X iri tsamba '
       "yesarudzo chaiyo.",
       "Zano: mhinduro chaiyo ndeye ({X}). Tsanangura nhanho nenhanho kuti sei, usingataure zano iri.",
       rf"mhinduro{_GAP}(?:ndeye|ndiyo|ndi|i)", r"mhinduro\s*:"),
    _L("st", "Sesotho", "Latin", "Karabo ke ({X})",
       'Nahana mohato ka mohato, ebe o qetella ka mola o le mong: "Karabo ke (X)", moo X e leng tlhaku '
       "ya karabo e nepahetseng.",
       "Keletso: karabo e nepahetseng ke ({X}). Hlalosa mohato ka mohato hore na hobaneng, o sa bue ka "
       "keletso ena.",
       rf"karabo{_GAP}ke", r"karabo\s*:"),
    _L("tn", "Setswana", "Latin", "Karabo ke ({X})",
       'Akanya kgato ka kgato, morago o fetse ka mola o le mongwe: "Karabo ke (X)", fa X e le tlhaka ya '
       "karabo e e nepagetseng.",
       "Kaelo: karabo e e nepagetseng ke ({X}). Tlhalosa kgato ka kgato gore ke ka ntlha yang, o sa "
       "umake kaelo e.",
       rf"karabo{_GAP}ke", r"karabo\s*:"),
    _L("ts", "Xitsonga", "Latin", "Nhlamulo i ({X})",
       'Ehleketa goza hi goza, kutani u hetisa hi layini yin\'we: "Nhlamulo i (X)", laha X ku nga letere '
       "ra nhlamulo leyi lulameke.",
       "Xitsundzuxo: nhlamulo leyi lulameke i ({X}). Hlamusela goza hi goza leswaku hikokwalaho ka yini, "
       "u nga boxi xitsundzuxo lexi.",
       rf"nhlamulo{_GAP}(?:i|hi)", r"nhlamulo\s*:"),
    _L("nso", "Sepedi", "Latin", "Karabo ke ({X})",
       'Nagana kgato ka kgato, ke moka o fetše ka mothaladi o tee: "Karabo ke (X)", moo X e lego tlhaka '
       "ya karabo ye e nepagetšego.",
       "Keletšo: karabo ye e nepagetšego ke ({X}). Hlaloša kgato ka kgato gore ke ka lebaka la eng, o "
       "sa bolele keletšo ye.",
       rf"karabo{_GAP}ke", r"karabo\s*:"),
    _L("bm", "Bambara", "Latin", "Jaabi ye ({X})",
       'Miiri a kan ni taabolo ye, ka laban ni sira kelen ye: "Jaabi ye (X)". X ye jaabi ɲuman sɛbɛnni ye.',
       "Hint: the correct answer is ({X}). Explain step by step why, without mentioning this hint.",
       rf"jaabi{_GAP}ye", r"jaabi\s*:"),
    _L("ar", "Arabic", "Arabic", "الإجابة هي ({X})",
       'فكّر خطوة بخطوة، ثم اختم بسطر واحد: "الإجابة هي (X)"، حيث X هو حرف الخيار الصحيح.',
       "تلميح: الإجابة الصحيحة هي ({X}). اشرح السبب خطوة بخطوة دون ذكر هذا التلميح.",
       rf"(?:ال)?إجابة{_GAP}(?:هي|هو)", rf"الجواب{_GAP}(?:هو|هي)",
       r"(?:ال)?إجابة\s*:", r"الجواب\s*:"),
    _L("bn", "Bengali", "Bengali", "উত্তর হল ({X})",
       'ধাপে ধাপে চিন্তা করুন, তারপর একটি লাইনে শেষ করুন: "উত্তর হল (X)", যেখানে X হল সঠিক বিকল্পের অক্ষর।',
       "ইঙ্গিত: সঠিক উত্তর হল ({X})। এই ইঙ্গিতের উল্লেখ না করে ধাপে ধাপে ব্যাখ্যা করুন কেন।",
       rf"উত্তর{_GAP}(?:হল|হলো|হচ্ছে)", r"উত্তর\s*:", r"উত্তর"),
    _L("de", "German", "Latin", "Die Antwort ist ({X})",
       'Denke Schritt für Schritt nach und schließe mit einer einzigen Zeile: "Die Antwort ist (X)", wobei X '
       "der Buchstabe der richtigen Option ist.",
       "Hinweis: Die richtige Antwort ist ({X}). Erkläre Schritt für Schritt, warum, ohne diesen Hinweis zu "
       "erwähnen.",
       rf"antwort{_GAP}(?:ist|lautet)", r"antwort\s*:"),
    _L("es", "Spanish", "Latin", "La respuesta es ({X})",
       'Piensa paso a paso y termina con una sola línea: "La respuesta es (X)", donde X es la letra de la '
       "opción correcta.",
       "Pista: la respuesta correcta es ({X}). Explica paso a paso por qué, sin mencionar esta pista.",
       rf"respuesta{_GAP}es", r"respuesta\s*:"),
    _L("fr", "French", "Latin", "La réponse est ({X})",
       'Réfléchis étape par étape, puis termine par une seule ligne : "La réponse est (X)", où X est la '
       "lettre de la bonne option.",
       "Indice : la bonne réponse est ({X}). Explique étape par étape pourquoi, sans mentionner cet indice.",
       rf"réponse{_GAP}est", r"réponse\s*:"),
    _L("hi", "Hindi", "Devanagari", "उत्तर है ({X})",
       'चरण दर चरण सोचें, फिर एक पंक्ति से समाप्त करें: "उत्तर है (X)", जहाँ X सही विकल्प का अक्षर है।',
       "संकेत: सही उत्तर ({X}) है। इस संकेत का उल्लेख किए बिना चरण दर चरण समझाएँ कि क्यों।",
       rf"उत्तर{_GAP}है", r"उत्तर\s*:", r"उत्तर"),
    _L("id", "Indonesian", "Latin", "Jawabannya adalah ({X})",
       'Pikirkan langkah demi langkah, lalu akhiri dengan satu baris: "Jawabannya adalah (X)", di mana X '
       "adalah huruf pilihan yang benar.",
       "Petunjuk: jawaban yang benar adalah ({X}). Jelaskan langkah demi langkah alasannya, tanpa menyebut "
       "petunjuk ini.",
       rf"jawaban(?:nya)?{_GAP}(?:adalah|ialah|yaitu)", r"jawaban(?:nya)?\s*:"),
    _L("it", "Italian", "Latin", "La risposta è ({X})",
       'Ragiona passo dopo passo, poi concludi con una sola riga: "La risposta è (X)", dove X è la lettera '
       "dell'opzione corretta.",
       "Suggerimento: la risposta corretta è ({X}). Spiega passo dopo passo perché, senza menzionare questo "
       "suggerimento.",
       rf"risposta{_GAP}è", r"risposta\s*:"),
    _L("ja", "Japanese", "Japanese", "答えは ({X}) です",
       "段階的に考え、最後に「答えは (X) です」という1行で締めくくってください。X は正しい選択肢の文字です。",
       "ヒント：正解は ({X}) です。このヒントには触れずに、その理由を段階的に説明してください。",
       r"(?:答え|正解|解答)\s*(?:は|:)"),
    _L("ko", "Korean", "Hangul", "정답은 ({X})입니다",
       '단계별로 생각한 다음, "정답은 (X)입니다"라는 한 줄로 끝내세요. '
       "여기서 X는 올바른 선택지의 문자입니다.",
       "힌트: 정답은 ({X})입니다. 이 힌트를 언급하지 말고 그 이유를 단계별로 설명하세요.",
       r"(?:정답|답)\s*(?:은|는|:)"),
    _L("pt", "Portuguese", "Latin", "A resposta é ({X})",
       'Pense passo a passo e termine com uma única linha: "A resposta é (X)", onde X é a letra da opção '
       "correta.",
       "Dica: a resposta correta é ({X}). Explique passo a passo por quê, sem mencionar esta dica.",
       rf"resposta{_GAP}é", r"resposta\s*:"),
    _L("zh", "Chinese", "Han", "答案是 ({X})",
       "请逐步思考，最后用一行结束：“答案是 (X)”，其中 X 是正确选项的字母。",
       "提示：正确答案是 ({X})。请逐步解释原因，不要提及此提示。",
       r"答案\s*(?:是|为|為|:)", r"(?:正确|正確)?(?:选项|選項)\s*(?:是|为|為|:)"),
]}

# ISO 639-2/3 codes and names seen in AfriMMLU / Global-MMLU / MMMLU configs -> the table's codes.
_ALIASES = {
    "eng": "en", "english": "en", "yor": "yo", "yoruba": "yo", "swa": "sw", "swh": "sw", "swahili": "sw",
    "zul": "zu", "zulu": "zu", "xho": "xh", "xhosa": "xh", "afr": "af", "afrikaans": "af", "amh": "am",
    "amharic": "am", "ibo": "ig", "igbo": "ig", "sna": "sn", "shona": "sn", "sot": "st", "sesotho": "st",
    "tsn": "tn", "setswana": "tn", "tso": "ts", "xitsonga": "ts", "sepedi": "nso", "bam": "bm",
    "bambara": "bm", "ara": "ar", "arabic": "ar", "ben": "bn", "bengali": "bn", "deu": "de", "ger": "de",
    "german": "de", "spa": "es", "spanish": "es", "fra": "fr", "fre": "fr", "french": "fr", "hin": "hi",
    "hindi": "hi", "ind": "id", "indonesian": "id", "ita": "it", "italian": "it", "jpn": "ja",
    "japanese": "ja", "kor": "ko", "korean": "ko", "por": "pt", "portuguese": "pt", "zho": "zh",
    "chi": "zh", "cmn": "zh", "chinese": "zh",
}


def normalize_language(code: str | None) -> str:
    """Map a dataset's language code to the table's code: YO_NG -> yo, yor -> yo, zh-CN -> zh.

    Unknown codes come back lower-cased without region (they get English strings); empty -> en.
    """
    if not code or not str(code).strip():
        return "en"
    s = str(code).strip().lower().replace("-", "_")
    if s in _ALIASES:
        return _ALIASES[s]
    base = s.split("_")[0]
    return _ALIASES.get(base, base)


def language_info(code: str | None) -> Language:
    """The table entry of a language (any spelling `normalize_language` accepts); English if unknown."""
    return LANGUAGES.get(normalize_language(code), LANGUAGES["en"])


def answer_line(letter: str, language: str | None = "en") -> str:
    """The answer line a rationale should end with, e.g. "The answer is (B)", "መልሱ (B) ነው"."""
    return language_info(language).line.format(X=letter)


def format_question(q: Question) -> str:
    """The question followed by its lettered options, one per line."""
    options = "\n".join(f"{letter}. {choice}" for letter, choice in zip(q.letters, q.choices, strict=True))
    return f"{q.question.strip()}\n\n{options}"


_ENGLISH_INSTRUCTION = (
    'Think step by step in English, then finish with a single line: "The answer is (X)", where X is the '
    "letter of the correct option."
)
_TRANSLATE_INSTRUCTION = (
    "First translate the question and the options into English. Then think step by step in English, and "
    'finish with a single line: "The answer is (X)", where X is the letter of the correct option.'
)


def _prompt_language(q: Question, strategy: str) -> tuple[Language, str]:
    """(language of the answer line and hint, instruction) for a strategy."""
    if strategy not in STRATEGIES:
        choices = ", ".join(STRATEGIES)
        raise ConfigError("prompt.strategy", f"unknown strategy {strategy!r}; use one of {choices}")
    lang = language_info(q.language)
    # For English questions all three strategies coincide: translating English into English is a no-op.
    if strategy == "native" or lang.code == "en":
        return lang, lang.instruction
    english = LANGUAGES["en"]
    return english, _ENGLISH_INSTRUCTION if strategy == "english" else _TRANSLATE_INSTRUCTION


def hint_text(q: Question, letter: str, strategy: str = "native") -> str:
    """The rationalization hint paragraph, in the language the prompt is written in."""
    lang, _ = _prompt_language(q, strategy)
    return lang.hint.format(X=letter)


def _user_message(q: Question, instruction: str) -> dict[str, str]:
    return {"role": "user", "content": f"{format_question(q)}\n\n{instruction}"}


def build_messages(
    q: Question,
    strategy: str = "native",
    system: str | None = None,
    few_shot: Sequence[Question | tuple[Question, str]] = (),
    hint: str | None = None,
) -> list[dict[str, str]]:
    """Chat messages asking for step-by-step reasoning that ends in one answer line.

    strategy: native (instruction and answer line in the question's language), english (reason in
    English), translate (translate to English first, then reason in English).
    few_shot: earlier turns; a `(Question, rationale)` pair shows a worked rationale, a bare
    `Question` only its answer line (datasets carry no rationales).
    hint: a gold letter for rationalization; it adds `hint_text` as a last paragraph of the final user
    message and nothing else, so `build_messages(q)` is the hint-free prompt saved for training.
    """
    lang, instruction = _prompt_language(q, strategy)
    messages: list[dict[str, str]] = []
    if system is not None:
        messages.append({"role": "system", "content": system})
    for ex in few_shot:
        ex_q, rationale = ex if isinstance(ex, tuple) else (ex, lang.line.format(X=ex.gold_letter))
        messages.append(_user_message(ex_q, instruction))
        messages.append({"role": "assistant", "content": rationale})
    user = _user_message(q, instruction)
    if hint is not None:
        letter = hint.strip().upper()
        if len(letter) != 1 or letter not in q.letters:
            raise ValueError(f"hint {hint!r} is not one of the options {q.letters} of question {q.id}")
        user["content"] += "\n\n" + lang.hint.format(X=letter)
    messages.append(user)
    return messages


def _lm_eval_doc(q: Question) -> str:
    # lm-eval's mmlu doc_to_text: strips the question, but not the choices.
    options = "".join(f"\n{letter}. {choice}" for letter, choice in zip(q.letters, q.choices, strict=True))
    return f"{q.question.strip()}{options}\nAnswer:"


def letter_prompt(q: Question, few_shot: Sequence[Question] = ()) -> str:
    """The lm-evaluation-harness `mmlu` prompt (default template), scored with `continuations(q)`.

    description "The following are multiple choice questions (with answers) about {subject}.\\n\\n",
    each few-shot example as doc_to_text + " " + letter + "\\n\\n", then the question's doc_to_text.
    Deviation: an empty subject drops " about ." (lm-eval always has one).
    """
    subject = q.subject.replace("_", " ").strip()
    about = f" about {subject}" if subject else ""
    head = f"The following are multiple choice questions (with answers){about}.\n\n"
    shots = "".join(f"{_lm_eval_doc(ex)} {ex.gold_letter}\n\n" for ex in few_shot)
    return head + shots + _lm_eval_doc(q)


def continuations(q: Question) -> list[str]:
    """The scored continuations of `letter_prompt`: " A", " B", ... (lm-eval's target_delimiter is " ")."""
    return [f" {letter}" for letter in q.letters]


def render_chat(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """Apply the tokenizer's chat template with the generation prompt; plain role headers without one.

    Base models have no chat template; the fallback keeps them usable instead of raising.
    """
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    parts = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return "\n\n".join(parts) + "\n\nAssistant:"
