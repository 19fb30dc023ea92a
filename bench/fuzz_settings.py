"""Broken settings for `bench/fuzz.py`: configs, preload files, checkpoints, run folders and output
folders; `generate` collects every category (fuzz_data.py's and fuzz_cases.py's too)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import shutil
from pathlib import Path

from fuzz_cases import generate_more
from fuzz_data import gen_datasets, gen_hub
from fuzz_inputs import Case, Gen, write_dataset, write_preload


def _dataclass_fields():
    from starloop.config import Config

    for group in dataclasses.fields(Config):
        default = getattr(Config(), group.name)
        if dataclasses.is_dataclass(default):
            for f in dataclasses.fields(default):
                yield f"{group.name}.{f.name}", f.type, getattr(default, f.name)
        else:
            yield group.name, group.type, default


def gen_configs(g: Gen) -> None:
    import torch

    from starloop.config import CHOICES, RANGES
    from starloop.hydra_config import GROUP_OPTIONS

    rng = g.rng
    def command() -> str:
        return rng.choice(["train", "eval"])

    # Unknown keys.
    groups = ["model", "data", "prompt", "eval", "trainer", "logger", ""]
    for grp in groups:
        for name in rng.sample(["foo", "lr_rate", "batchsize", "limit2", "seeed", "x", "max_tokens", "learning_rate",
                                "iteration", "dropout"], 4):
            key = f"{grp}.{name}" if grp else name
            prefix = rng.choice(["", "", "+", "++"])
            g.add("config", f"unknown key {prefix}{key}", g.base(command(), f"{prefix}{key}=1"), [key])
    # Wrong types.
    bad_for = {"int": ["abc", "1.5", "[1]", "{a: 1}", "true2"], "float": ["abc", "[1]", "fast", "{}"],
               "bool": ["maybe", "[true]", "yes please", "2x"], "list": ["7", "{a: 1}"],
               "str": ["[1, 2]", "{a: 1}"]}
    for key, typ, _ in _dataclass_fields():
        t = str(typ)
        kind = ("list" if "list" in t else "bool" if "bool" in t else "float" if "float" in t
                else "int" if "int" in t else "str" if "str" in t else None)
        if kind is None or key in ("out",):
            continue
        for v in rng.sample(bad_for[kind], 2 if kind in ("int", "float", "bool") else 1):
            g.add("config", f"wrong type {key}={v}", g.base(command(), f"{key}={v}"), [key])
    # Out of range.
    for key, (lo, hi) in RANGES.items():
        if lo is not None:
            for v in {lo - 1 if isinstance(lo, int) else lo - 0.5, -1000}:
                g.add("config", f"below range {key}={v}", g.base(command(), f"{key}={v}"), [key])
        if hi is not None:
            v = hi + 1 if isinstance(hi, int) else hi + 0.5
            g.add("config", f"above range {key}={v}", g.base(command(), f"{key}={v}"), [key])
    # Unknown enum values.
    for key in CHOICES:
        for v in ("nope", "SFT2", "none_of_these"):
            g.add("config", f"bad choice {key}={v}", g.base(command(), f"{key}={v}"), [key])
    for grp in [*GROUP_OPTIONS, "prompt", "trainer", "launcher"]:
        if grp == "model":
            continue  # model=NAME is a path or hub id: covered below
        g.add("config", f"bad group option {grp}", g.base(command(), f"{grp}=nope_option"), [grp])
    # Malformed overrides.
    for o, needle in [("data.limit", "data.limit"), ("data.limit=[1,", "data.limit"), ("trainer.lr=1e-4)", "trainer.lr"),
                      ("data..limit=3", "data..limit"), ("~data.limit", "data.limit"), ("data.limit=${oops}", "data.limit"),
                      ("data.limit=", "data.limit"), ("trainer.lr='0.1", "trainer.lr"), ("eval.mode=[generate", "eval.mode"),
                      ("+data.limit=3", "data.limit"), ("seed=1,2", "seed"), ("trainer.lr=${trainer.nope}", "trainer.lr"),
                      ("data.subjects=nope", "data.subjects"), ("trainer.lora_target_modules=7", "trainer.lora_target_modules")]:
        g.add("config", f"malformed {o}", g.base(command(), o), [needle])
    # Bytes that are not UTF-8 (arrive as lone surrogates).
    for key in ("data.path", "out", "trainer.lr", "model.name", "data.language", "trainer.preload_data_for_training",
                "checkpoint", "data.subjects"):
        for bad in ("\udcff", "caf\udce9", "\udcc3("):  # bytes ff; e9 (Latin-1 é); c3 + "("
            g.add("config", f"non-UTF-8 {key}", g.base(command(), f"{key}=x{bad}y"), [key, "UTF-8"])
    g.add("config", "non-UTF-8 key", g.base("train", "da\udcffta.limit=3"), ["da\\udcffta.limit", "UTF-8"])
    # Values that compose but name nothing real.
    for o, needle in [("data.language=xx", "data.language"), ("data.language=klingon", "data.language"),
                      ("data.subjects=[nope]", "data.subjects"), ("data.subjects=[anatomy,nope]", "data.subjects"),
                      ("model.device=nope", "model.device"), ("model.device=cuda:99", "model.device"),
                      ("model.device=tpu", "model.device"), ("model.dtype=nope", "model.dtype"),
                      ("model.dtype=Tensor", "model.dtype"), ("model=./no_such_model", "model.name"),
                      ("model=/no/such/model", "model.name"), ("model.name=/no/such/file.gguf", "model.name"),
                      (f"model={g.data_ok}", "model.name"), ("data.train_split=dev", "data.train_split")]:
        g.add("config", f"unresolvable {o}", g.base(command(), o), [needle])
    if not torch.cuda.is_available():
        g.add("config", "cuda without a GPU", g.base("train", "model.device=cuda"), ["model.device", "CUDA"])
    g.add("config", "dpo with one sample", g.base("train", "trainer.strategy=dpo", "trainer.samples_per_question=1"),
          ["trainer.samples_per_question"])


def gen_preload(g: Gen, n: int) -> None:
    rng = g.rng
    kinds = ["missing_column", "bad_int", "bad_utf8", "nonexistent", "folder", "extra_field", "truncate",
             "empty_id", "empty_file", "header_only", "utf16"]
    for _ in range(n):
        kind = rng.choice(kinds)
        d = g.folder("preload")
        path = d / "generated.csv"
        shutil.copy(g.preload_ok, path)
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        header = lines[0].split(",")
        r = rng.randrange(1, len(lines))  # a data line; its row number (header = row 1) is r + 1
        needles = [path.name, f"row {r + 1}"]
        if kind == "missing_column":
            col = rng.choice(["question_id", "prompt", "rationale"])
            i = header.index(col)
            lines = [",".join(x for j, x in enumerate(ln.split(",")) if j != i) for ln in lines]
            path.write_text("\n".join(lines) + "\n", encoding="utf-8")
            needles = [path.name, col]
        elif kind == "bad_int":
            col = rng.choice(["sample_index", "n_tokens"])
            i = header.index(col)
            parts = lines[r].split(",")
            parts[i] = rng.choice(["x", "1.5", "two", "1e3"])
            lines[r] = ",".join(parts)
            path.write_text("\n".join(lines) + "\n", encoding="utf-8")
            needles.append(col)
        elif kind == "bad_utf8":
            data = path.read_bytes()
            pos = rng.randrange(len(data) // 3, len(data) - 1)
            path.write_bytes(data[:pos] + rng.choice([b"\xff", b"\xe9", b"\x80\x80"]) + data[pos:])
            needles = [path.name, "UTF-8"]
        elif kind == "utf16":
            path.write_bytes(text.encode("utf-16"))
            needles = [path.name, "UTF-8"]
        elif kind == "nonexistent":
            path.unlink()
            needles = [path.name, "not found"]
        elif kind == "folder":
            path.unlink()
            path.mkdir()
            needles = [path.name, "not found"]
        elif kind == "extra_field":
            lines[r] += ",surplus"
            path.write_text("\n".join(lines) + "\n", encoding="utf-8")
            needles.append("more fields")
        elif kind == "truncate":
            r = len(lines) - 1
            cut = rng.randint(1, len(lines[r]) - 2)
            path.write_text("\n".join(lines[:r]) + "\n" + lines[r][:cut], encoding="utf-8")
            needles = [path.name, f"row {r + 1}"]
        elif kind == "empty_id":
            lines[r] = "," + lines[r].split(",", 1)[1]
            path.write_text("\n".join(lines) + "\n", encoding="utf-8")
            needles.append("question_id")
        elif kind == "empty_file":
            path.write_bytes(b"")
            needles = [path.name, "missing column"]
        elif kind == "header_only":
            path.write_text(lines[0] + "\n", encoding="utf-8")
            needles = [path.name, "no rows"]
        key = rng.choice(["trainer.preload_data_for_training", "trainer.preload_data_for_val"])
        g.add("preload", f"{kind} ({key})", g.base("train", f"{key}={path}"), needles)


def gen_checkpoints(g: Gen, n: int) -> None:
    rng = g.rng
    adapter = g.run / "iter_1" / "train" / "adapter"
    kinds = ["no_config", "no_weights", "bad_json", "not_dict", "no_peft_type", "truncated_weights",
             "garbage_weights", "nonexistent", "a_file", "empty_folder", "iter_without_adapter", "config_utf8"]
    for _ in range(n):
        kind = rng.choice(kinds)
        d = g.folder("ckpt")
        ck = d / "adapter"
        shutil.copytree(adapter, ck)
        target, needles = ck, []
        weights, cfgf = ck / "adapter_model.safetensors", ck / "adapter_config.json"
        if kind == "no_config":
            cfgf.unlink()
            needles = ["checkpoint", "adapter_config.json"]
        elif kind == "no_weights":
            weights.unlink()
            needles = [weights.name, "missing"]
        elif kind == "bad_json":
            cfgf.write_text(cfgf.read_text()[: rng.randint(1, 40)], encoding="utf-8")
            needles = [cfgf.name]
        elif kind == "config_utf8":
            cfgf.write_bytes(b'{"peft_type": "LORA\xff"}')
            needles = [cfgf.name]
        elif kind == "not_dict":
            cfgf.write_text(rng.choice(["[]", "3", '"LORA"', "null"]), encoding="utf-8")
            needles = [cfgf.name]
        elif kind == "no_peft_type":
            c = json.loads(cfgf.read_text())
            c.pop("peft_type", None)
            cfgf.write_text(json.dumps(c), encoding="utf-8")
            needles = [cfgf.name, "peft_type"]
        elif kind == "truncated_weights":
            data = weights.read_bytes()
            weights.write_bytes(data[: rng.randrange(0, len(data) - 1)])
            needles = [weights.name]
        elif kind == "garbage_weights":
            weights.write_bytes(bytes(rng.randrange(256) for _ in range(rng.randrange(0, 64))))
            needles = [weights.name]
        elif kind == "nonexistent":
            target = d / "nothing_here"
            needles = ["checkpoint", "nothing_here"]
        elif kind == "a_file":
            target = weights
            needles = ["checkpoint", weights.name]
        elif kind == "empty_folder":
            shutil.rmtree(ck)
            ck.mkdir()
            needles = ["checkpoint", "adapter_config.json"]
        elif kind == "iter_without_adapter":
            it = d / "iter_1"
            (it / "train").mkdir(parents=True)
            shutil.rmtree(ck)
            target = it
            needles = ["checkpoint", "iter_1"]
        out = d / "eval_out"
        shutil.copytree(g.run / "iter_0", out / "iter_0")  # an existing folder that must stay untouched
        g.add("checkpoint", kind, g.base("eval", f"checkpoint={target}", out=out), needles, out=out)


def gen_run_folders(g: Gen) -> None:
    """Resuming a run whose folder was damaged (files lost, saved config corrupt) or with another config."""
    damages = [
        ("iter_1/train/adapter/adapter_model.safetensors", "delete", "adapter_model.safetensors"),
        ("iter_1/train/adapter/adapter_config.json", "delete", "adapter_config.json"),
        ("iter_1/train/log.jsonl", "delete", "log.jsonl"),
        ("iter_1/val/metrics.json", "delete", "metrics.json"),
        ("iter_0/val/generations.csv", "delete", "generations.csv"),
        ("iter_1/sample/generations.csv", "delete", "generations.csv"),
        ("iter_1/train/adapter/adapter_model.safetensors", "garbage", "adapter_model.safetensors"),
        ("config.yaml", "garbage", "config.yaml"),
        ("config.yaml", "latin1", "config.yaml"),
        ("config.yaml", "list", "config.yaml"),
    ]
    for rel, how, needle in damages:
        d = g.folder("runfolder") / "run"
        shutil.copytree(g.run, d)
        p = d / rel
        if how == "delete":
            p.unlink()
        elif how == "garbage":
            p.write_bytes(b"\x00\x01 not : [ valid")
        elif how == "latin1":
            p.write_bytes(b"model: caf\xe9\n")
        elif how == "list":
            p.write_text("- 1\n- 2\n", encoding="utf-8")
        g.add("run folder", f"{how} {rel}", g.base("train", out=d), [needle], out=d)
    for o, key in [("trainer.lr=0.5", "trainer.lr"), ("seed=7", "seed"), ("trainer.samples_per_question=3",
                   "trainer.samples_per_question"), ("data.limit=3", "data.limit"), ("trainer.strategy=reinforce",
                   "trainer.strategy")]:
        g.add("run folder", f"resume with {o}", g.base("train", o), [key])


@contextlib.contextmanager
def _disk_full():
    from starloop import runstate

    old = runstate.MIN_FREE_BYTES
    runstate.MIN_FREE_BYTES = 1 << 62
    try:
        yield
    finally:
        runstate.MIN_FREE_BYTES = old


@contextlib.contextmanager
def _busy(folder: Path):
    """The folder's lock held as another process holds it (its own open file, not this process's RunLock)."""
    import fcntl

    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def gen_outputs(g: Gen) -> None:
    d = g.folder("outputs")
    a_file = d / "a_file"
    a_file.write_text("x")
    for out, needle in [(a_file / "run", "a_file"), (a_file, "a_file"), (Path("/proc/starloop_run"), "/proc"),
                        (Path("/proc/self/starloop_run"), "/proc/self")]:
        for command in ("train", "eval"):
            g.add("output", f"{command} out={out}", g.base(command, out=out), [needle, "not writable"], out=g.run)
    g.add("output", "train disk full", g.base("train"), [str(g.run), "MB free"], inprocess_only=True,
          patch=_disk_full)
    g.add("output", "eval disk full", g.base("eval", out=d / "ev"), [str(d / "ev"), "MB free"], out=d / "ev",
          inprocess_only=True, patch=_disk_full)
    busy = d / "busy_run"
    shutil.copytree(g.run, busy)
    g.add("output", "train on a run folder in use", g.base("train", out=busy), ["another starloop run"], out=busy,
          patch=lambda: _busy(busy))


def generate(root: Path, seed: int, run: Path, scale: float = 1.0) -> list[Case]:
    data_ok = root / "data_ok"
    if not data_ok.exists():
        write_dataset(data_ok)
    preload_ok = root / "preload_ok.csv"
    write_preload(preload_ok)
    shutil.rmtree(root / "cases", ignore_errors=True)
    g = Gen(root, random.Random(seed), run, data_ok, preload_ok)
    gen_datasets(g, int(170 * scale))
    gen_hub(g, int(50 * scale))
    gen_configs(g)
    gen_preload(g, int(50 * scale))
    gen_checkpoints(g, int(30 * scale))
    gen_run_folders(g)
    gen_outputs(g)
    generate_more(g, root / "eval_run", _dataclass_fields)
    return g.cases
