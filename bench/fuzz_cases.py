"""The newer categories of `bench/fuzz.py`: what a hostile user does to a run folder and its inputs.

- ownership: `starloop eval` into a train run, `train` into an eval folder, an eval folder with another config;
- numbers: NaN and infinity in every float key;
- resume: the data edited (same ids, other content; rows added or removed) or config.yaml deleted between runs;
- damaged: half-written metrics.json / train_data.jsonl / run.json, garbage logs, a DONE marker that is not
  JSON, a stray `iter_1.bak`, `.lock` as a folder;
- preload values: rewards that are text, NaN or infinite, question ids of another dataset, a val file without
  `correct`, `correct` that disagrees with `extracted` and `gold`, booleans that are neither;
- checkpoint fit: adapters of another model (other tensor names, other shapes), pickled weights, an adapter
  folder or a folder with only config.json as model=, a corrupt .gguf;
- environment: an empty or over-long out=, settings that cannot run (dtype, device, LoRA targets, splits,
  checkpoint= for train), a full disk while sampling (a real run: `Case.real`).
"""

from __future__ import annotations

import contextlib
import csv
import errno
import shutil
from pathlib import Path


def _rows(path: Path) -> list[list[str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.reader(f))


def _write_rows(path: Path, rows: list[list[str]]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows(rows)


def gen_ownership(g, eval_run: Path) -> None:
    for extra in ([], ["eval.mode=logit"], ["data.split=test"]):
        g.add("ownership", f"eval into a train run {extra}", g.base("eval", *extra), [str(g.run), "starloop train"])
    d = g.folder("ownership") / "ev"
    shutil.copytree(eval_run, d)
    g.add("ownership", "train into an eval folder", g.base("train", out=d), [str(d), "starloop eval"], out=d)
    g.add("ownership", "eval folder, other config", g.base("eval", "data.limit=3", out=d), ["data.limit"], out=d)


def gen_numbers(g, fields) -> None:
    for key, typ, _ in fields():
        if "float" not in str(typ):
            continue
        for v in ("nan", "inf", "-inf", "NaN"):
            g.add("numbers", f"{key}={v}", g.base(g.rng.choice(["train", "eval"]), f"{key}={v}"), [key, "finite"])


@contextlib.contextmanager
def _data_edited(folder: Path, kind: str):
    """The run's own data folder edited for the time of one case, then restored."""
    saved = {f: f.read_bytes() for f in folder.rglob("*.csv")}
    try:
        for f in sorted(saved):
            rows = _rows(f)
            if kind == "content":
                rows = [[r[0] + " (edited)", *r[1:]] for r in rows]
            elif kind == "answer":
                rows = [[*r[:5], "ABCD"[("ABCD".index(r[5]) + 1) % 4]] for r in rows]
            elif kind == "fewer":
                rows = rows[:-1]
            _write_rows(f, rows)
        yield
    finally:
        for f, data in saved.items():
            f.write_bytes(data)


def gen_resume(g) -> None:
    for kind, needles in [("content", ["questions differ", "changed"]), ("answer", ["questions differ", "changed"]),
                          ("fewer", ["questions differ", "gone"])]:
        g.add("resume", f"data edited ({kind})", g.base("train"), needles, inprocess_only=True,
              patch=lambda kind=kind: _data_edited(g.data_ok, kind))
    for extra in ([], ["trainer.lr=0.5"], ["seed=3"]):
        d = g.folder("resume") / "run"
        shutil.copytree(g.run, d)
        (d / "config.yaml").unlink()
        g.add("resume", f"config.yaml deleted {extra}", g.base("train", *extra, out=d), ["config.yaml", "missing"],
              out=d)


def _half(p: Path) -> None:
    """The first half of the file (a file too short to halve: half a JSON line)."""
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2] if len(data) > 8 else b'{"prompt": "cut sh')


def gen_damaged(g) -> None:
    damages = [
        ("iter_1/val/metrics.json", _half, "metrics.json"),
        ("iter_0/val/metrics.json", lambda p: p.write_text("{}"), "metrics.json"),
        ("iter_1/train_data.jsonl", _half, "train_data.jsonl"),
        ("iter_1/train_data.jsonl", lambda p: p.write_text('{"prompt": "x"}\n'), "train_data.jsonl"),
        ("iter_1/train/log.jsonl", lambda p: p.write_text("garbage\n"), "log.jsonl"),
        ("logs/steps.jsonl", lambda p: p.write_text("garbage\n{}\n"), "steps.jsonl"),
        ("logs/metrics.csv", lambda p: p.write_bytes(b"\xff\xfe garbage"), "metrics.csv"),
        ("iter_1/train/DONE", lambda p: p.write_text("not json"), "DONE"),
        ("iter_0/val/DONE", lambda p: p.write_text("[1"), "DONE"),
        ("run.json", _half, "run.json"),
        ("run.json", lambda p: p.write_text('{"command": 3}'), "run.json"),
        ("iter_1", lambda p: shutil.copytree(p, p.with_name("iter_1.bak")), "iter_1.bak"),
        ("iter_1", lambda p: p.with_name("iter_x").write_text(""), "iter_x"),
        (".lock", lambda p: (p.unlink(), p.mkdir()), ".lock"),
    ]
    for rel, damage, needle in damages:
        d = g.folder("damaged") / "run"
        shutil.copytree(g.run, d)
        if not (d / rel).exists():
            continue  # a file runs of this version do not write
        damage(d / rel)
        g.add("damaged", f"{rel} {needle}", g.base("train", out=d), [needle], out=d)


def gen_preload_values(g) -> None:
    gens = g.run / "iter_1" / "generations.csv"
    val = g.run / "iter_0" / "val" / "generations.csv"

    def case(name: str, src: Path, edit, needles, key="trainer.preload_data_for_training") -> None:
        d = g.folder("preloadv")
        rows = _rows(src)
        header, body = rows[0], rows[1:]
        r = g.rng.randrange(len(body))
        edit(header, body, r)
        path = d / "generated.csv"
        _write_rows(path, [header, *body])
        g.add("preload values", name, g.base("train", f"{key}={path}", out=d / "new"),
              [path.name, *[n.format(row=r + 2) for n in needles]], out=d / "new")

    def setcol(col, value):
        def edit(header, body, r):
            if col not in header:
                header.append(col)
                for b in body:
                    b.append("")
            body[r][header.index(col)] = value
        return edit

    for v in ("abc", "nan", "inf", "-inf", "1e999", "[1]"):
        case(f"reward {v}", gens, setcol("answer_logprob", v), ["row {row}", "answer_logprob"])
    for v in ("mmmlu/test/YO_NG/anatomy/0001", "other/q1"):
        case(f"foreign id {v}", gens, setcol("question_id", v), ["row {row}", "question_id"])
    for v in ("maybe", "2", "T"):
        case(f"correct={v}", gens, setcol("correct", v), ["row {row}", "correct"])

    def drop_correct(header, body, r):
        i = header.index("correct")
        del header[i]
        for b in body:
            del b[i]

    for key in ("trainer.preload_data_for_val", "trainer.preload_data_for_training"):
        case(f"no correct column ({key})", val if key.endswith("val") else gens, drop_correct, ["correct"], key=key)

    def right_but_empty(header, body, r):
        body[r][header.index("correct")] = "True"
        body[r][header.index("extracted")] = ""

    case("correct=True, extracted empty", gens, right_but_empty, ["row {row}", "correct"])

    def wrong_gold(header, body, r):
        g_ = body[r][header.index("gold")]
        body[r][header.index("gold")] = "ABCD"[("ABCD".index(g_) + 1) % 4] if g_ in "ABCD" and g_ else "A"

    case("gold differs from the question's", gens, wrong_gold, ["row {row}", "gold"])


def gen_checkpoint_fit(g) -> None:
    from safetensors.torch import load_file, save_file

    adapter = g.run / "iter_1" / "train" / "adapter"

    def variant(name: str, change, needles) -> None:
        d = g.folder("ckfit")
        ck = d / "adapter"
        shutil.copytree(adapter, ck)
        w = load_file(str(ck / "adapter_model.safetensors"))
        save_file(change(w), str(ck / "adapter_model.safetensors"))
        g.add("checkpoint fit", name, g.base("eval", f"checkpoint={ck}", out=d / "ev"),
              ["adapter_model.safetensors", *needles], out=d / "ev")

    def reshape(w, part):
        k = next(k for k in sorted(w) if part in k)
        w[k] = w[k].new_zeros(w[k].shape[0] + 3, w[k].shape[1] + 5)
        return w

    variant("4-layer model's adapter", lambda w: {k.replace("layers.1.", "layers.3."): v for k, v in w.items()},
            ["names no module"])
    variant("other architecture", lambda w: {k.replace("mlp", "feed_forward"): v for k, v in w.items()},
            ["names no module"])
    variant("other width (lora_A)", lambda w: reshape(w, "lora_A"), ["has shape"])
    variant("other width (lora_B)", lambda w: reshape(w, "lora_B"), ["has shape"])
    variant("no LoRA tensors", lambda w: {"something.weight": next(iter(w.values()))}, ["no LoRA"])
    d = g.folder("ckfit")
    ck = d / "adapter"
    shutil.copytree(adapter, ck)
    (ck / "adapter_model.safetensors").rename(ck / "adapter_model.bin")
    g.add("checkpoint fit", "pickled weights", g.base("eval", f"checkpoint={ck}", out=d / "ev"),
          ["adapter_model.bin", "pickle"], out=d / "ev")
    g.add("checkpoint fit", "adapter folder as model=", g.base("eval", f"model={adapter}", out=d / "ev2"),
          ["adapter folder", "checkpoint="], out=d / "ev2")
    cfg_only = d / "cfg_only"
    cfg_only.mkdir()
    (cfg_only / "config.json").write_text('{"model_type": "llama"}')
    g.add("checkpoint fit", "model folder with only config.json", g.base("eval", f"model={cfg_only}", out=d / "ev3"),
          ["cfg_only", "weights"], out=d / "ev3")
    for i, data in enumerate((b"GGUF" + bytes(20), b"not a gguf at all", b"")):
        f = d / f"broken{i}.gguf"
        f.write_bytes(data)
        g.add("checkpoint fit", f"corrupt gguf {i}", g.base("eval", f"model={f}", out=d / f"ev_g{i}"),
              [f.name], out=d / f"ev_g{i}")


@contextlib.contextmanager
def _disk_full_while_sampling():
    try:
        from starloop.stages import sampling as writer
    except ImportError:  # versions before the stages had a module of their own
        from starloop import loop as writer

    real = writer.write_samples

    def full(path, samples):
        if "part_" in Path(path).name:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, samples)

    writer.write_samples = full
    try:
        yield
    finally:
        writer.write_samples = real


def gen_environment(g) -> None:
    for command in ("train", "eval"):
        g.add("environment", f"{command} out= empty", g.base(command)[:-1] + ["out="], ["out"], out=None)
        g.add("environment", f"{command} out= blank", g.base(command)[:-1] + ["out=   "], ["out"], out=None)
        long_name = g.root / ("x" * 300)
        g.add("environment", f"{command} folder name > 255 bytes", g.base(command, out=long_name), ["out", "255"],
              out=None)
        deep = g.root / "/".join(["y" * 200] * 20)
        g.add("environment", f"{command} path too long", g.base(command, out=deep), ["out", "limit"], out=None)
    for o, needle in [("model.dtype=int8", "model.dtype"), ("model.dtype=bool", "model.dtype"),
                      ("model.device=meta", "model.device"), ("checkpoint=/nonexistent", "checkpoint"),
                      (f"checkpoint={g.run / 'iter_1'}", "checkpoint"), ("data.val_split=train", "data.train_split"),
                      ("trainer.lora_target_modules=[no_such_module]", "trainer.lora_target_modules"),
                      ("trainer.lora_target_modules=[]", "trainer.lora_target_modules")]:
        g.add("environment", f"train {o}", g.base("train", o), [needle])
    d = g.folder("envdisk") / "run"
    g.add("environment", "disk full while sampling (a real run)", g.base("train", out=d),
          ["no space left", "part_"], out=None, inprocess_only=True, patch=_disk_full_while_sampling, real=True)


def generate_more(g, eval_run: Path, fields) -> None:
    gen_ownership(g, eval_run)
    gen_numbers(g, fields)
    gen_resume(g)
    gen_damaged(g)
    gen_preload_values(g)
    gen_checkpoint_fit(g)
    gen_environment(g)


__all__ = ["generate_more"]
