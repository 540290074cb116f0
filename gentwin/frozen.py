"""The frozen part of the backbone, run once: its output for every sequence, and the forward pass finished from it.

Everything below the lowest Twin Adapter (Fig. 3: a frozen and a tunable part) depends only on the input
tokens, so :func:`frozen_states` runs it once per data set and :func:`top_hidden` finishes a forward pass
from it: a training step runs only the adapters, the layers above them, the final norm and the head.  In
float32 this equals the model's own forward exactly; ``tests/test_llm.py`` checks that on a tiny LLaMA, so a
transformers upgrade that changes ``LlamaModel.forward`` fails a test rather than silently changing results.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .llm import BackboneError, causal_lm, compute_autocast, model_device
from .progress import progress as progress_bar

__all__ = ["run_layers", "FrozenStates", "frozen_states", "top_hidden", "full_hidden"]


def run_layers(model, hidden, attention_mask, start: int, stop: int | None):
    """Decoder layers ``start:stop`` on right-padded hidden states, with the causal mask and rotary embeddings
    ``LlamaModel.forward`` builds around them."""
    from transformers.masking_utils import create_causal_mask

    inner = causal_lm(model).model
    position_ids = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
    mask = create_causal_mask(config=inner.config, inputs_embeds=hidden, attention_mask=attention_mask,
                              past_key_values=None, position_ids=position_ids)
    pos = inner.rotary_emb(hidden, position_ids=position_ids)
    for layer in inner.layers[start:stop]:
        hidden = layer(hidden, attention_mask=mask, position_embeddings=pos, position_ids=position_ids)
    return hidden


@dataclass(frozen=True)
class FrozenStates:
    """The frozen part's output for every sequence (:func:`frozen_states`).

    Without ``mlp_out``, ``residual`` is the input of decoder layer ``layer``.  With it (``inside``) the cache
    reaches into that layer up to its adapter: the layer's output is ``residual + adapter(mlp_out)``
    (post-attention residual stream, frozen feed-forward output).
    """

    residual: Any
    mlp_out: Any
    layer: int

    @property
    def inside(self) -> bool:
        return self.mlp_out is not None

    def take(self, rows, t: int, device):
        """The states of ``rows``, cut to the first ``t`` positions, on ``device``."""
        r = self.residual[rows, :t].to(device)
        m = self.mlp_out[rows, :t].to(device) if self.mlp_out is not None else None
        return r, m


def frozen_states(model, encoded, start_layer: int, *, adapter=None, batch_size: int = 32,
                  compute_dtype: str = "float32", progress: bool = False) -> FrozenStates:
    """Run the frozen part (layers below ``start_layer``, which must be frozen) once over every sequence of
    ``encoded`` (right-padded ``input_ids``, ``attention_mask``, ``lengths``) and keep its output.

    With ``adapter`` (the one layer ``start_layer``'s ``mlp.base_layer`` feeds) the cache reaches into that
    layer, if its output equals ``residual + adapter(mlp_out)`` exactly on the first batch; otherwise it stops
    at the layer boundary.
    """
    base = causal_lm(model)
    layers = base.model.layers
    if not 0 <= start_layer < len(layers):
        raise BackboneError(f"start_layer = {start_layer}: must be in 0..{len(layers) - 1}")
    if any(p.requires_grad for layer in layers[:start_layer] for p in layer.parameters()):
        raise BackboneError(f"start_layer = {start_layer}: layers below it have trainable parameters; "
                            "they are not frozen")
    dev = model_device(model)
    n, t_all = encoded.input_ids.shape
    residual = torch.zeros((n, t_all, base.config.hidden_size), dtype=torch.float32, device=dev)
    mlp_out = torch.zeros_like(residual) if adapter is not None else None
    order = torch.argsort(encoded.lengths, descending=True, stable=True)
    layer = layers[start_layer]
    captured: dict[str, Any] = {}
    hooks = []
    if adapter is not None:
        hooks.append(layer.post_attention_layernorm.register_forward_pre_hook(
            lambda _mod, args: captured.__setitem__("residual", args[0])))
        hooks.append(layer.mlp.base_layer.register_forward_hook(
            lambda _mod, args, out: captured.__setitem__("mlp_out", out)))
    try:
        with torch.no_grad(), compute_autocast(model, compute_dtype):
            for s in progress_bar(range(0, n, batch_size), desc="frozen part", disable=not progress, leave=False):
                rows = order[s: s + batch_size]
                t = int(encoded.lengths[rows].max())
                att = encoded.attention_mask[rows, :t].to(dev)
                h = run_layers(model, base.model.embed_tokens(encoded.input_ids[rows, :t].to(dev)), att, 0, start_layer)
                if mlp_out is not None:
                    out = run_layers(model, h, att, start_layer, start_layer + 1)
                    h, m = captured["residual"], captured["mlp_out"]
                    if s == 0 and not torch.equal(out, h + adapter(m)):
                        # not a LLaMA-style residual layout: cache at the layer boundary instead (the hooks,
                        # removed below, never fire there: that pass stops below this layer)
                        return frozen_states(model, encoded, start_layer, batch_size=batch_size,
                                             compute_dtype=compute_dtype, progress=progress)
                    mlp_out[rows.to(dev), :t] = m.float().to(dev)
                residual[rows.to(dev), :t] = h.float().to(dev)
    finally:
        for hk in hooks:
            hk.remove()
    return FrozenStates(residual=residual, mlp_out=mlp_out, layer=start_layer)


def top_hidden(model, states, attention_mask, start_layer: int, adapter=None):
    """Final normed hidden states from ``states = (residual, mlp_out)`` of :meth:`FrozenStates.take`."""
    residual, mlp_out = states
    if mlp_out is None:
        h = run_layers(model, residual, attention_mask, start_layer, None)
    else:
        h = run_layers(model, residual + adapter(mlp_out), attention_mask, start_layer + 1, None)
    return causal_lm(model).model.norm(h)


def full_hidden(model, input_ids, attention_mask):
    """Final normed hidden states from a plain forward pass of the whole (possibly PEFT-wrapped) model."""
    return causal_lm(model).model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
