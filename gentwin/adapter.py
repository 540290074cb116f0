r"""The Twin Adapter (Section II.B.2, eq. (8), Fig. 3): its config, the layer, its injection into a backbone, saving and loading.

A bottleneck adapter after the feed-forward (MLP) block of chosen decoder layers of a frozen causal LM:
:math:`h' = h + \mathrm{ReLU}(h W_D)\, W_U` with :math:`W_D \in \mathbb{R}^{k \times l}`,
:math:`W_U \in \mathbb{R}^{l \times k}` (row vectors; ``k`` hidden size, ``l`` bottleneck).  The paper prints
the ReLU outside both projections; its text orders down-projection, ReLU, up-projection, the reading used
here (see the errata page).  ``W_U`` starts at zero, so the adapted model starts as the backbone.  Organised
as in PEFT (config, layer, injection and save/load of the adapter only), but a plain ``torch.nn.Module``:
peft 0.21 registers only names already in its ``PeftType`` enum.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import pathlib
import re
from dataclasses import dataclass, field
from numbers import Integral
from typing import Any, Mapping, Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .checks import check_int, check_real
from .files import atomic_folder, atomic_write_bytes, atomic_write_text

__all__ = [
    "AdapterError", "TwinAdapterConfig", "TwinAdapter", "AdaptedMLP", "add_twin_adapters", "adapter_layer_indices",
    "adapter_modules", "adapter_parameter_count", "parameter_breakdown", "parameters_per_layer", "LORA_TARGETS",
    "lora_cost_per_rank", "parameter_budget", "adapter_state_dict", "save_adapter", "load_adapter",
    "ADAPTER_CONFIG_NAME", "ADAPTER_WEIGHTS_NAME",
]

ADAPTER_CONFIG_NAME = "adapter_config.json"
ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
ADAPTER_TYPE = "gentwin-twin-adapter"
FORMAT_VERSION = 1


class AdapterError(ValueError):
    """A bad adapter setting, an unsupported model, or a saved adapter that does not fit."""


def _h(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True)
class TwinAdapterConfig:
    """Settings of the Twin Adapters added to a backbone (validated on creation).

    >>> TwinAdapterConfig(bottleneck=16, layers=[3, 1]).layers
    (1, 3)
    >>> TwinAdapterConfig(bottleneck=0)
    Traceback (most recent call last):
    ...
    gentwin.adapter.AdapterError: bottleneck = 0: must be >= 1 (size l of the down-projection W_D: hidden -> l)
    """

    bottleneck: int = field(default=64, metadata=_h("size l of the down-projection W_D: hidden -> l"))
    layers: tuple[int, ...] | None = field(
        default=None, metadata=_h("indices of the decoder layers that get an adapter (negative counts from the top); "
                                  "None = the top n_top layers"))
    n_top: int = field(default=2, metadata=_h("number of top decoder layers adapted when layers is None"))
    dropout: float = field(default=0.0, metadata=_h("dropout on the bottleneck activations during training"))
    init_scale: float = field(
        default=1.0, metadata=_h("W_D starts as N(0, (init_scale / sqrt(hidden))^2); W_U always starts at zero"))
    bias: bool = field(default=False, metadata=_h("add biases to both projections (eq. (8) has none)"))
    seed: int = field(default=0, metadata=_h("seed of the W_D initialisation"))

    def __post_init__(self) -> None:
        checks = (("bottleneck", check_int, {"low": 1}), ("n_top", check_int, {"low": 1}), ("layers", None, {}),
                  ("dropout", check_real, {"low": 0.0, "high": 1.0, "high_open": True}),
                  ("init_scale", check_real, {"low": 0.0, "low_open": True}), ("bias", None, {}),
                  ("seed", check_int, {"low": 0}))
        for name, check, bounds in checks:
            value = getattr(self, name)
            problem = None
            if check is not None:
                try:
                    check(name, value, error=AdapterError, **bounds)
                except AdapterError as err:
                    raise AdapterError(f"{err} ({self.help(name)})") from None
            elif name == "bias" and not isinstance(value, bool):
                problem = "must be true or false"
            elif name == "layers" and value is not None:
                if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value:
                    problem = "must be None or a non-empty list of layer indices"
                elif any(isinstance(i, bool) or not isinstance(i, Integral) for i in value):
                    problem = "every layer index must be an integer"
                elif len(set(value)) != len(value):
                    problem = "layer indices must not repeat"
                else:
                    object.__setattr__(self, "layers", tuple(sorted(value)))
            if problem:
                raise AdapterError(f"{name} = {value!r}: {problem} ({self.help(name)})")

    @classmethod
    def help(cls, name: str) -> str:
        """The help text of field ``name``."""
        return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}[name]

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> "TwinAdapterConfig":
        """The config from a :class:`~gentwin.config.Settings` or its ``training`` section
        (``bottleneck``; ``adapter_layers`` -> ``n_top``)."""
        training = getattr(settings, "training", settings)
        return cls(**{"bottleneck": training.bottleneck, "n_top": training.adapter_layers, **overrides})

    def resolve_layers(self, num_layers: int) -> tuple[int, ...]:
        """The sorted, non-negative layer indices for a backbone with ``num_layers`` layers.

        >>> TwinAdapterConfig(n_top=2).resolve_layers(30)
        (28, 29)
        >>> TwinAdapterConfig(layers=(0, -1)).resolve_layers(4)
        (0, 3)
        """
        if self.layers is None:
            if self.n_top > num_layers:
                raise AdapterError(f"n_top = {self.n_top}: the backbone has only {num_layers} decoder layers")
            return tuple(range(num_layers - self.n_top, num_layers))
        for i in self.layers:
            if not -num_layers <= i < num_layers:
                raise AdapterError(
                    f"layers = {self.layers!r}: index {i} is outside the backbone's {num_layers} decoder layers "
                    f"(valid: 0..{num_layers - 1} or -{num_layers}..-1)")
        out = sorted(i % num_layers for i in self.layers)
        if len(set(out)) != len(out):
            raise AdapterError(f"layers = {self.layers!r}: two indices name the same layer of {num_layers}")
        return tuple(out)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (tuples become lists)."""
        d = dataclasses.asdict(self)
        if d["layers"] is not None:
            d["layers"] = list(d["layers"])
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TwinAdapterConfig":
        """Inverse of :meth:`to_dict`; unknown keys are an error naming them."""
        if not isinstance(data, Mapping):
            raise AdapterError(f"config = {data!r}: must be a mapping of field names to values")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise AdapterError(f"config has unknown fields {unknown}; known fields: {sorted(known)}")
        return cls(**data)  # a JSON list of layers is sorted into a tuple on creation


class TwinAdapter(nn.Module):
    r"""One Twin Adapter: eq. (8), ``h' = h + ReLU(h W_D + b_D) W_U + b_U`` (biases only with ``bias``).

    The paper prints :math:`W_A = W_A + \mathrm{ReLU}((\mathcal{P}(\cdot) W_D) W_U)`; the reading used is
    the order of its text (down-projection, ReLU, up-projection, residual).  ``down.weight`` and
    ``up.weight`` are stored (out, in), i.e. transposed; :attr:`W_D` and :attr:`W_U` give the paper's
    orientation.  It computes in its own dtype (float32 for a low-precision backbone) and returns the input's.

    >>> a = TwinAdapter(hidden_size=8, bottleneck=2)
    >>> tuple(a.W_D.shape), tuple(a.W_U.shape), int(a.W_U.abs().sum())
    ((8, 2), (2, 8), 0)
    >>> x = torch.randn(3, 5, 8)
    >>> torch.equal(a(x), x)  # zero-initialised W_U: the identity
    True

    By hand: ``W_D = [[1], [-1]]`` takes ``h = (3, 1)`` to 2, ReLU keeps it, ``W_U = [[2, 3]]`` gives
    ``(4, 6)``, so ``h' = (7, 7)``; ``h = (1, 3)`` gives -2, ReLU 0, and ``h`` passes unchanged.

    >>> b = TwinAdapter(hidden_size=2, bottleneck=1)
    >>> with torch.no_grad():
    ...     _ = b.down.weight.copy_(torch.tensor([[1.0, -1.0]]))  # W_D^T
    ...     _ = b.up.weight.copy_(torch.tensor([[2.0], [3.0]]))  # W_U^T
    >>> b(torch.tensor([[3.0, 1.0], [1.0, 3.0]]))
    tensor([[7., 7.],
            [1., 3.]], grad_fn=<AddBackward0>)
    """

    def __init__(self, hidden_size: int, bottleneck: int, dropout: float = 0.0, bias: bool = False,
                 init_scale: float = 1.0, generator: torch.Generator | None = None, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None) -> None:
        super().__init__()
        check_int("hidden_size", hidden_size, low=1, error=AdapterError)
        TwinAdapterConfig(bottleneck=bottleneck, dropout=dropout, bias=bias, init_scale=init_scale)  # validation
        self.hidden_size = hidden_size
        self.bottleneck = bottleneck
        self.down = nn.Linear(hidden_size, bottleneck, bias=bias, dtype=dtype, device=device)
        self.up = nn.Linear(bottleneck, hidden_size, bias=bias, dtype=dtype, device=device)
        self.dropout = nn.Dropout(dropout)
        self.reset_parameters(init_scale, generator)

    @torch.no_grad()
    def reset_parameters(self, init_scale: float = 1.0, generator: torch.Generator | None = None) -> None:
        """``W_D ~ N(0, (init_scale/sqrt(hidden))^2)`` (drawn on the CPU), ``W_U = 0``, biases 0."""
        std = init_scale / math.sqrt(self.hidden_size)
        w = torch.randn(self.down.weight.shape, generator=generator, dtype=torch.float32) * std
        self.down.weight.copy_(w.to(self.down.weight.dtype))
        self.up.weight.zero_()
        for lin in (self.down, self.up):
            if lin.bias is not None:
                lin.bias.zero_()

    @property
    def W_D(self) -> torch.Tensor:  # noqa: N802 - the paper's name
        """The down-projection in the paper's orientation, shape (hidden, bottleneck)."""
        return self.down.weight.T

    @property
    def W_U(self) -> torch.Tensor:  # noqa: N802 - the paper's name
        """The up-projection in the paper's orientation, shape (bottleneck, hidden)."""
        return self.up.weight.T

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = h.to(self.down.weight.dtype)
        delta = self.up(self.dropout(F.relu(self.down(x))))
        return h + delta.to(h.dtype)

    def extra_repr(self) -> str:
        return f"hidden={self.hidden_size}, bottleneck={self.bottleneck}"


class AdaptedMLP(nn.Module):
    """A decoder layer's feed-forward block followed by a Twin Adapter: ``adapter(mlp(x))``."""

    def __init__(self, base_layer: nn.Module, twin_adapter: TwinAdapter) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.twin_adapter = twin_adapter

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        out = self.base_layer(*args, **kwargs)
        if not isinstance(out, torch.Tensor):
            raise AdapterError(f"mlp = {type(self.base_layer).__name__}: returns {type(out).__name__}, not a tensor; "
                               "the Twin Adapter supports dense feed-forward blocks only")
        return self.twin_adapter(out)


def _unwrap(model: nn.Module) -> nn.Module:
    inner = getattr(model, "get_base_model", None)
    return inner() if callable(inner) else model


def _decoder_layers(model: nn.Module) -> nn.ModuleList:
    """``model.model.layers`` (or ``model.layers``) of a LLaMA-style model, each with an ``.mlp``."""
    base = _unwrap(model)
    for owner in (getattr(base, "model", None), base):
        layers = getattr(owner, "layers", None) if owner is not None else None
        if isinstance(layers, nn.ModuleList) and len(layers) > 0 and all(
                isinstance(getattr(layer, "mlp", None), nn.Module) for layer in layers):
            return layers
    raise AdapterError(
        f"model = {type(base).__name__}: unsupported architecture; the Twin Adapter needs LLaMA-style decoder "
        "layers at model.model.layers[i], each with a feed-forward block .mlp (Llama, SmolLM2, Mistral, Qwen2, ...)")


def _hidden_size(model: nn.Module) -> int:
    hidden = getattr(getattr(_unwrap(model), "config", None), "hidden_size", None)
    if not isinstance(hidden, int):
        raise AdapterError(f"model = {type(model).__name__}: its config has no integer hidden_size")
    return hidden


def adapter_modules(model: nn.Module) -> dict[int, TwinAdapter]:
    """The Twin Adapters of ``model`` by decoder-layer index (empty if none)."""
    layers = _decoder_layers(model)
    return {i: layer.mlp.twin_adapter for i, layer in enumerate(layers) if isinstance(layer.mlp, AdaptedMLP)}


def adapter_layer_indices(model: nn.Module) -> list[int]:
    """Indices of the decoder layers that carry a Twin Adapter, ascending."""
    return list(adapter_modules(model))


def adapter_parameter_count(config: TwinAdapterConfig, hidden_size: int, num_layers: int) -> int:
    """Trainable parameters of ``config`` on a backbone, without building it: ``2 k l`` weights per adapter
    (plus ``l + k`` biases with ``bias``).

    >>> adapter_parameter_count(TwinAdapterConfig(bottleneck=64, n_top=2), hidden_size=576, num_layers=30)
    147456
    """
    n = len(config.resolve_layers(num_layers))
    return n * (2 * hidden_size * config.bottleneck + ((config.bottleneck + hidden_size) if config.bias else 0))


def add_twin_adapters(model: nn.Module, config: TwinAdapterConfig) -> nn.Module:
    """Insert a Twin Adapter after the MLP of the chosen decoder layers (``mlp`` becomes :class:`AdaptedMLP`)
    and freeze everything else, in place; the resolved config is kept as ``model.twin_adapter_config``.

    Adapters are float32 (float64 on a float64 backbone), whatever the backbone's dtype.
    """
    if not isinstance(config, TwinAdapterConfig):
        raise AdapterError(f"config = {config!r}: must be a TwinAdapterConfig")
    layers = _decoder_layers(model)
    existing = adapter_layer_indices(model)
    if existing:
        raise AdapterError(
            f"model already has Twin Adapters on layers {existing}; add adapters to a freshly loaded backbone")
    hidden = _hidden_size(model)
    chosen = config.resolve_layers(len(layers))
    for p in model.parameters():
        p.requires_grad_(False)
    generator = torch.Generator().manual_seed(config.seed)
    for i in chosen:
        mlp = layers[i].mlp
        ref = next(iter(mlp.parameters()), None)
        dtype = torch.float64 if ref is not None and ref.dtype == torch.float64 else torch.float32
        adapter = TwinAdapter(hidden, config.bottleneck, dropout=config.dropout, bias=config.bias,
                              init_scale=config.init_scale, generator=generator, dtype=dtype)
        if ref is not None:
            adapter.to(ref.device)
        adapter.train(mlp.training)
        layers[i].mlp = AdaptedMLP(mlp, adapter)
    model.twin_adapter_config = dataclasses.replace(config, layers=chosen)
    return model


#: Block of a parameter inside a decoder layer, by the first pattern its name (after ``layers.i``) matches.
_BLOCKS = (("Twin Adapter", r"\.twin_adapter\."), ("LoRA", r"\.lora_"), ("attention", r"\.(self_)?attn\."),
           ("feed-forward", r"\.mlp\."), ("norms", "norm"))


def _block_of(name: str) -> tuple[str, str]:
    """(part, block) of a parameter name, e.g. ("layer 29", "Twin Adapter")."""
    layer = re.search(r"(?:^|\.)layers\.(\d+)(\..*)?$", name)
    if layer:
        rest = (layer.group(2) or "") + "."
        return f"layer {layer.group(1)}", next((b for b, pat in _BLOCKS if re.search(pat, rest)), "other")
    parts = name.split(".")
    if "embed_tokens" in parts:
        return "embeddings", "embeddings"
    if "lm_head" in parts:
        return "output head", "output head"
    return ("final norm", "norms") if "norm" in name else ("other", "other")


def parameter_breakdown(model: nn.Module):
    """Frozen and trainable parameters per (part, block) of the model, as a :class:`pandas.DataFrame`.

    ``part``: ``"embeddings"``, ``"layer i"``, ``"final norm"``, ``"output head"``; ``block``:
    ``"attention"``, ``"feed-forward"``, ``"norms"``, ``"Twin Adapter"``, ``"LoRA"`` ...; ``layer``: the
    decoder-layer index or -1.  A tied head is counted once, under embeddings, so the columns add up to
    :func:`gentwin.llm.count_parameters`.
    """
    rows: dict[tuple[str, str], list[int]] = {}
    seen: set[int] = set()
    for name, p in model.named_parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        counts = rows.setdefault(_block_of(name), [0, 0])
        # bitsandbytes 4-bit weights pack two values per stored element (as transformers' num_parameters counts)
        counts[1 if p.requires_grad else 0] += p.numel() * (2 if type(p).__name__ == "Params4bit" else 1)
    out = pd.DataFrame([{"part": part, "block": block, "layer": int(part.split()[1]) if part.startswith("layer ")
                         else -1, "frozen": f, "trainable": t} for (part, block), (f, t) in rows.items()])
    return out.sort_values(["layer", "block"], kind="stable").reset_index(drop=True)


def parameters_per_layer(model: nn.Module):
    """Parameters of each decoder layer by ``kind`` ("frozen backbone", "Twin Adapter"): a DataFrame
    with columns layer, kind, parameters."""
    table = parameter_breakdown(model)
    return (table[table["layer"] >= 0]
            .assign(kind=lambda t: t["block"].where(t["block"] == "Twin Adapter", "frozen backbone"),
                    parameters=lambda t: t["frozen"] + t["trainable"])
            .groupby(["layer", "kind"], as_index=False)["parameters"].sum())


#: The attention projections the PEFT LoRA baseline of ``benchmarks/lora_budget.py`` adapts.
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


def lora_cost_per_rank(model: nn.Module, layers: Sequence[int], targets: Sequence[str], *,
                       name: str = "target_modules") -> int:
    """LoRA parameters per unit of rank on the linear maps ``targets`` of decoder ``layers``: Σ (in + out).

    Every layer must have every target (an AdapterError names the layer and the modules it has), so a
    budget is never worked out from some of the targets only.
    """
    if isinstance(targets, str) or not targets:
        raise AdapterError(f"{name} = {targets!r}: must be a non-empty list of module names")
    decoder, per_rank = _decoder_layers(model), 0
    for i in layers:
        found = {n.rsplit(".", 1)[-1]: m for n, m in decoder[i].named_modules() if isinstance(m, nn.Linear)}
        absent = [t for t in targets if t not in found]
        if absent:
            raise AdapterError(f"{name} = {tuple(targets)!r}: layer {i} has no linear module named {absent}; "
                               f"it has {sorted(found)}")
        per_rank += sum(found[t].in_features + found[t].out_features for t in targets)
    return per_rank


def parameter_budget(model: nn.Module, lora_targets: Sequence[str] = LORA_TARGETS):
    """Frozen, tunable and total parameters of an adapted model, and the LoRA baseline of the same budget
    (a :class:`pandas.DataFrame` indexed by ``part``; columns ``parameters``, ``share of all``).

    A rank-r LoRA on a linear map in -> out trains ``r (in + out)`` parameters; on the ``lora_targets`` of
    the adapted layers its rank is ``max(1, round(trainable / Σ (in + out)))``, as in
    ``benchmarks/lora_budget.py`` (both through :func:`lora_cost_per_rank`).
    """
    indices = adapter_layer_indices(model)
    config = getattr(model, "twin_adapter_config", None)
    if not indices or not isinstance(config, TwinAdapterConfig):
        raise AdapterError(f"model = {type(model).__name__}: has no Twin Adapters (use add_twin_adapters)")
    per_rank = lora_cost_per_rank(model, indices, lora_targets, name="lora_targets")
    table = parameter_breakdown(model)
    frozen, trainable = int(table["frozen"].sum()), int(table["trainable"].sum())
    total, rank = frozen + trainable, max(1, round(trainable / per_rank))
    rows = {"frozen (backbone)": frozen,
            f"tunable (Twin Adapters, l = {config.bottleneck}, {len(indices)} layers)": trainable, "total": total,
            f"LoRA baseline with the same budget (rank {rank} on {', '.join(lora_targets)})": rank * per_rank}
    out = pd.DataFrame({"part": list(rows), "parameters": list(rows.values())}).set_index("part")
    return out.assign(**{"share of all": out["parameters"] / total})


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapters' tensors on the CPU, keyed ``layers.{i}.down.weight`` etc."""
    return {f"layers.{i}.{name}": tensor.detach().to("cpu").clone().contiguous()
            for i, adapter in adapter_modules(model).items() for name, tensor in adapter.state_dict().items()}


def save_adapter(model: nn.Module, directory: str | os.PathLike) -> None:
    """Write only the adapters of ``model`` to ``directory``: safetensors weights + ``adapter_config.json``
    (the config, the backbone's architecture, hidden size and layer count, the weights' SHA-256).

    A new directory (or one holding only these two files) is swapped in whole; into one holding other
    files each file is written atomically, weights first, and the checksum exposes a mismatched pair.
    """
    from safetensors.torch import save

    cfg = getattr(model, "twin_adapter_config", None)
    indices = adapter_layer_indices(model)
    if not indices or not isinstance(cfg, TwinAdapterConfig):
        raise AdapterError(f"model = {type(model).__name__}: has no Twin Adapters to save (use add_twin_adapters)")
    if tuple(indices) != cfg.layers:
        raise AdapterError(f"model.twin_adapter_config.layers = {cfg.layers}: the model's adapters sit on {indices}")
    weights = save(adapter_state_dict(model), metadata={"format": "pt", "adapter_type": ADAPTER_TYPE})
    base = _unwrap(model)
    backbone = {"architecture": (getattr(base.config, "architectures", None) or [type(base).__name__])[0],
                "name_or_path": str(getattr(base.config, "_name_or_path", "") or ""),
                "hidden_size": _hidden_size(model), "num_hidden_layers": len(_decoder_layers(model))}
    meta = {"adapter_type": ADAPTER_TYPE, "format_version": FORMAT_VERSION, "config": cfg.to_dict(),
            "backbone": backbone, "weights_sha256": hashlib.sha256(weights).hexdigest()}
    files = {ADAPTER_WEIGHTS_NAME: weights, ADAPTER_CONFIG_NAME: json.dumps(meta, indent=2, sort_keys=True) + "\n"}
    target = pathlib.Path(directory).expanduser()
    if target.exists() and not target.is_dir():
        raise AdapterError(f"directory = {str(directory)!r}: exists and is not a folder")
    if target.is_dir() and any(p.name not in files for p in target.iterdir()):
        atomic_write_bytes(target / ADAPTER_WEIGHTS_NAME, files[ADAPTER_WEIGHTS_NAME])
        atomic_write_text(target / ADAPTER_CONFIG_NAME, files[ADAPTER_CONFIG_NAME])
        return
    atomic_folder(target, files)


def _read_saved(directory: pathlib.Path) -> tuple[dict[str, Any], pathlib.Path]:
    cfg_path, w_path = directory / ADAPTER_CONFIG_NAME, directory / ADAPTER_WEIGHTS_NAME
    if not directory.is_dir():
        raise AdapterError(f"directory = {str(directory)!r}: no such folder")
    for path in (cfg_path, w_path):
        if not path.is_file():
            raise AdapterError(f"directory = {str(directory)!r}: {path.name} is missing; not a saved Twin Adapter")
    try:
        meta = json.loads(cfg_path.read_text())
    except ValueError as err:
        raise AdapterError(f"{cfg_path}: not valid JSON ({err})") from None
    if not isinstance(meta, dict) or meta.get("adapter_type") != ADAPTER_TYPE:
        found = meta.get("adapter_type") if isinstance(meta, dict) else None
        raise AdapterError(f"{cfg_path}: adapter_type = {found!r}, expected {ADAPTER_TYPE!r}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise AdapterError(f"{cfg_path}: format_version = {meta.get('format_version')!r}, "
                           f"this gentwin reads {FORMAT_VERSION}")
    with open(w_path, "rb") as fh:
        if meta.get("weights_sha256") != hashlib.file_digest(fh, "sha256").hexdigest():
            raise AdapterError(f"{w_path}: its SHA-256 does not match the one recorded in {ADAPTER_CONFIG_NAME} "
                               "(an interrupted or mixed save); save the adapter again")
    return meta, w_path


def load_adapter(model: nn.Module, directory: str | os.PathLike) -> nn.Module:
    """Add the adapters saved in ``directory`` to ``model`` (a fresh backbone, or one with adapters of the
    same layout) and load their weights.  Backbone sizes, layers, tensor names, shapes and the checksum
    must all match."""
    from safetensors.torch import load_file

    path = pathlib.Path(directory).expanduser()
    meta, w_path = _read_saved(path)
    config = TwinAdapterConfig.from_dict(meta.get("config", {}))
    saved_bb = meta.get("backbone", {})
    here = {"hidden_size": _hidden_size(model), "num_hidden_layers": len(_decoder_layers(model))}
    for key, value in here.items():
        if saved_bb.get(key) != value:
            raise AdapterError(
                f"{path}: the adapter was saved for a backbone with {key} = {saved_bb.get(key)!r} "
                f"({saved_bb.get('name_or_path') or saved_bb.get('architecture')}), but this model has {key} = {value}")
    existing = adapter_layer_indices(model)
    if existing:
        current = getattr(model, "twin_adapter_config", None)
        if tuple(existing) != config.layers or current is None or current.bottleneck != config.bottleneck:
            raise AdapterError(
                f"{path}: saved adapters on layers {list(config.layers or ())} with bottleneck {config.bottleneck}, "
                f"but the model already has adapters on {existing}"
                + (f" with bottleneck {current.bottleneck}" if current is not None else ""))
    else:
        add_twin_adapters(model, config)
    tensors = load_file(str(w_path))
    expected = {k: tuple(v.shape) for k, v in adapter_state_dict(model).items()}
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise AdapterError(f"{w_path}: missing tensors {missing}, unexpected tensors {unexpected}")
    for key, shape in expected.items():
        if tuple(tensors[key].shape) != shape:
            raise AdapterError(f"{w_path}: tensor {key} has shape {tuple(tensors[key].shape)}, expected {shape}")
    for i, adapter in adapter_modules(model).items():
        prefix = f"layers.{i}."
        adapter.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}, strict=True)
    return model
