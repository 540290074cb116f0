"""The LoRA baseline of the Twin Adapter: PEFT LoRA on the same top layers with the same trainable budget.

Used by ``benchmarks/adapter_training.py`` (Twin Adapter pipeline versus a
plain LoRA fine-tune).  A rank-``r`` LoRA on a linear map ``in -> out`` trains
``r (in + out)`` parameters, so the rank that matches a budget follows from
the shapes of the targeted projections (:func:`plan_lora`).  Tests:
``tests/test_adapter.py`` (the LoRA section loads this file by path).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from gentwin.adapter import LORA_TARGETS, TwinAdapterConfig, adapter_layer_indices, lora_cost_per_rank
from gentwin.checks import check_int, check_real
from gentwin.llm import causal_lm, count_parameters, tiny_backbone  # noqa: F401 - tiny_backbone for the doctest

__all__ = ["LORA_DEFAULT_TARGETS", "LoraPlan", "plan_lora", "lora_baseline"]

#: LoRA targets of the baseline by default: the attention projections of the chosen layers.
LORA_DEFAULT_TARGETS: tuple[str, ...] = LORA_TARGETS


@dataclass(frozen=True)
class LoraPlan:
    """A LoRA rank and targets chosen to match a trainable-parameter budget."""

    rank: int
    target_modules: tuple[str, ...]
    layers: tuple[int, ...]
    per_rank: int  #: LoRA parameters per unit of rank: sum over targets of (in + out)
    trainable: int  #: rank * per_rank
    target: int  #: the requested count (e.g. the Twin Adapter's)

    @property
    def relative_difference(self) -> float:
        """``(trainable - target) / target``."""
        return (self.trainable - self.target) / self.target


def plan_lora(
    model: nn.Module,
    target_trainable: int,
    *,
    layers: Sequence[int] | None = None,
    n_top: int = 2,
    target_modules: Sequence[str] = LORA_DEFAULT_TARGETS,
) -> LoraPlan:
    """The LoRA rank whose trainable count is nearest ``target_trainable``.

    A rank-``r`` LoRA on a linear map ``in -> out`` trains ``r (in + out)``
    parameters, so with ``c`` = the sum of ``in + out`` over the targeted
    linear maps of the chosen layers the rank is ``max(1, round(target / c))``.
    ``layers``/``n_top`` pick the decoder layers as in :class:`TwinAdapterConfig`.

    >>> model, _ = tiny_backbone()  # hidden 64, 4 heads of 16, 2 KV heads: q,o 64->64, k,v 64->32
    >>> plan = plan_lora(model, 1024, n_top=2)  # per rank: 2 layers x (128 + 96 + 96 + 128) = 896
    >>> plan.rank, plan.trainable
    (1, 896)
    """
    check_int("target_trainable", target_trainable, low=1)
    chosen = TwinAdapterConfig(layers=layers, n_top=n_top).resolve_layers(len(causal_lm(model).model.layers))
    per_rank = lora_cost_per_rank(model, chosen, target_modules)
    rank = max(1, round(target_trainable / per_rank))
    return LoraPlan(rank=rank, target_modules=tuple(target_modules), layers=chosen, per_rank=per_rank,
                    trainable=rank * per_rank, target=target_trainable)


def lora_baseline(
    model: nn.Module,
    target_trainable: int,
    *,
    layers: Sequence[int] | None = None,
    n_top: int = 2,
    target_modules: Sequence[str] = LORA_DEFAULT_TARGETS,
    lora_alpha: float | None = None,
    lora_dropout: float = 0.0,
    seed: int = 0,
):
    """PEFT LoRA on the same top layers, with about ``target_trainable`` trainable parameters.

    The rank comes from :func:`plan_lora` (targets: the attention projections
    ``q_proj, k_proj, v_proj, o_proj`` unless given); ``lora_alpha`` defaults
    to ``2 * rank``.  LoRA's ``B`` starts at zero, so like the Twin Adapter the
    wrapped model starts equal to the backbone.  ``model`` is changed in place
    by PEFT: pass a freshly loaded backbone without Twin Adapters.

    Returns
    -------
    peft.PeftModel
        ``count_parameters(result)["trainable"]`` equals
        ``plan_lora(...).trainable``.
    """
    from peft import LoraConfig, get_peft_model

    if adapter_layer_indices(model):
        raise ValueError("model has Twin Adapters; the LoRA baseline needs a freshly loaded backbone")
    check_real("lora_dropout", lora_dropout, low=0.0, high=1.0, high_open=True)
    plan = plan_lora(model, target_trainable, layers=layers, n_top=n_top, target_modules=target_modules)
    alpha = 2 * plan.rank if lora_alpha is None else lora_alpha
    check_real("lora_alpha", alpha, low=0.0, low_open=True)
    cfg = LoraConfig(
        r=plan.rank, lora_alpha=alpha, lora_dropout=float(lora_dropout), bias="none", task_type="CAUSAL_LM",
        target_modules=list(plan.target_modules), layers_to_transform=list(plan.layers), layers_pattern="layers",
    )
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        # transformers 5 deprecates an attribute that peft 0.21 still reads; not ours to fix
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        torch.manual_seed(seed)
        peft_model = get_peft_model(model, cfg)
    got = count_parameters(peft_model)["trainable"]
    if got != plan.trainable:  # pragma: no cover - a PEFT behaviour change would show here
        raise ValueError(f"LoRA trains {got} parameters, but the plan expected {plan.trainable}")
    return peft_model
