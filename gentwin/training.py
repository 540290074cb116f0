r"""The adaptive twin-modelling task: training the Twin Adapter (Section II.B.2, Algorithm 1 lines 9-14).

Each log instance names a device node; eq. (2) gives its key-value pair
``(k, v)``.  The task verbalises that pair as a short *prompt* and asks the
model to continue it with the node's own facts -- the relations it is the head
of -- as triples in one fixed text form (the *target*)::

    [:s] {AQ-S017, AQ-GW03} ->  (AQ-S017, CONNECTED_TO, AQ-GW03); (AQ-S017, SERVES_IN, AQ)<eos>
    [:gw] {AQ-GW03, 5} ->  (AQ-GW03, CONNECTED_TO, AQ-GW07); (AQ-GW03, SERVES_IN, AQ)<eos>

Training minimises the cross-entropy of the target tokens only (prompt
tokens are masked out of the loss).  The data order comes from Priority
Pooling (:func:`gentwin.pooling.training_order`); "without pooling" is the same
data in a seeded random order.

**Speed: the frozen part is computed once.**  The backbone is frozen and the
adapters sit after the feed-forward block of the top decoder layers, so
everything below the lowest adapter depends only on the input tokens.
:func:`prepare_task` runs that part once per data set (:func:`frozen_states`:
the lower layers plus the lowest adapted layer's attention and feed-forward
block) and every epoch, seed and pooling order reuses it: a training step runs
only the adapters, the decoder layers above them, the final norm and the
output head.  With ``compute_dtype="float32"`` and the full vocabulary this
path gives the plain model's loss exactly (``tests/test_training.py``);
``compute_dtype="bfloat16"`` runs every forward pass under bfloat16 autocast.

By default the output head is also restricted to the token ids that occur in
the task's targets (plus end-of-sequence): the softmax runs over that
*output vocabulary* instead of all of the backbone's words, for training,
teacher-forced evaluation and greedy decoding alike (``restrict_vocab``).
The kept logits are exactly the full head's logits at those ids; what changes
is the normaliser of the softmax and the set of tokens decoding may emit.

**Metrics.**  For an entity ``e`` let ``G_e`` be its gold facts and ``P_e`` the triples the
model produces for it.  Over the unique entities of a split (micro-averaged):

* accuracy ``= Σ|P_e ∩ G_e| / Σ|G_e|`` (the fraction of gold triples produced),
* precision ``= Σ|P_e ∩ G_e| / Σ|P_e|`` (0 when nothing is produced),
* eq. (9)'s L1 over the relation indicator vector, see :func:`l1_loss` and
  :func:`relation_indicators`.

``P_e`` comes from one of two decoders (``eval_mode``):

``"teacher_forced"``
    one forward pass over the gold sequence.  A gold triple counts as
    produced when the model's own best next token equals the gold token at
    every one of its positions (its separator included); otherwise the
    arg-max tokens at those positions are decoded, and any other well-formed
    triple they spell counts as a produced, wrong triple.  Cheap (it reuses
    the frozen cache), so it is what the per-epoch and per-round curves use.
``"generate"``
    greedy decoding from the prompt alone (batched, KV cache, at most as many
    new tokens as the longest target), parsed into triples.  This is the
    model's real output; it is used for the final numbers and
    :func:`extract_graph`.  Sequences whose teacher-forced arg-max already
    reproduces the whole target are known to decode to it exactly, so only
    the others are decoded (``shortcut=True``).
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .config import TrainingConfig
from .topology import DataSet, Instance, Relation, Topology, TopologyError

__all__ = [
    "TrainingError",
    "TRIPLE_SEPARATOR",
    "node_prompt",
    "node_facts",
    "facts_text",
    "verbalise",
    "parse_triples",
    "Encoded",
    "encode_pairs",
    "OutputVocab",
    "output_vocabulary",
    "causal_lm",
    "split_layer",
    "FrozenStates",
    "frozen_states",
    "top_hidden",
    "full_hidden",
    "head_logits",
    "target_loss",
    "l1_loss",
    "relation_indicators",
    "triple_scores",
    "pooling_gain",
    "TwinTask",
    "prepare_task",
    "reset_adapters",
    "greedy_generate",
    "predict_triples",
    "evaluate",
    "make_optimizer",
    "train_twin",
    "round_slices",
    "extraction_curve",
    "extract_graph",
    "compare_graph",
    "qa_pairs",
    "qa_feedback",
    "training_instances",
    "run_seeds",
    "setup_twin",
    "fig7_runs",
    "fig6_runs",
    "fig6_gains",
]

IGNORE = -100
#: Between two triples of a target.
TRIPLE_SEPARATOR = "; "
_TRIPLE_RE = re.compile(r"\(\s*([^(),;\s]+)\s*,\s*([A-Za-z_]+)\s*,\s*([^(),;\s]+)\s*\)")


class TrainingError(ValueError):
    """Bad input to the twin-modelling task (the message names the argument and value)."""


# ---------------------------------------------------------------------------
# Verbalisation: eq. (2) as a prompt, the node's facts as the target
# ---------------------------------------------------------------------------


def node_prompt(topology: Topology, node_id: str, degree: int | None = None) -> str:
    """The (k, v) pair of eq. (2) for one device node, as prompt text.

    ``[:s] {sensor id, gateway id} ->`` for a sensor, ``[:gw] {gateway id, d_i} ->``
    for a gateway (``d_i`` = connected sensors).  The presence of eq. (1) is
    not part of the prompt: it changes a node's priority, not its facts.

    >>> from gentwin.config import TopologyConfig
    >>> from gentwin.topology import generate_topology
    >>> topo = generate_topology(TopologyConfig(n_gateways=6, n_sensors=24, n_gateway_links=3, n_instances=60))
    >>> node_prompt(topo, "AQ-S001")
    '[:s] {AQ-S001, AQ-GW02} ->'
    >>> node_prompt(topo, "AQ-GW02")
    '[:gw] {AQ-GW02, 7} ->'
    """
    node = topology.nodes.get(node_id)
    if node is None:
        raise TrainingError(f"node_id = {node_id!r}: not a node of the topology")
    if node.kind == "sensor":
        return f"[:s] {{{node.id}, {node.gateway}}} ->"
    if node.kind == "gateway":
        d = topology.sensor_count(node.id) if degree is None else degree
        return f"[:gw] {{{node.id}, {d}}} ->"
    raise TrainingError(f"node_id = {node_id!r}: a {node.kind} node has no (k, v) pair (eq. 2 covers sensors and gateways)")


def node_facts(topology: Topology, node_id: str) -> list[Relation]:
    """The relations ``node_id`` is the head of, sorted (head, type, tail)."""
    if node_id not in topology.nodes:
        raise TrainingError(f"node_id = {node_id!r}: not a node of the topology")
    return sorted(topology.relations_of(node_id))


def facts_text(relations: Iterable[Relation]) -> str:
    """Triples in the one fixed text form: sorted ``Relation.as_text()`` joined by ``"; "``.

    >>> facts_text([Relation("b", "IN", "c"), Relation("a", "SERVES_IN", "b")])
    '(a, SERVES_IN, b); (b, IN, c)'
    """
    return TRIPLE_SEPARATOR.join(r.as_text() for r in sorted(relations))


def verbalise(dataset: DataSet, instance: Instance) -> tuple[str, str]:
    """The (prompt, target) pair of one log instance.

    >>> from gentwin.config import TopologyConfig
    >>> from gentwin.topology import generate_dataset
    >>> ds = generate_dataset(TopologyConfig(n_gateways=6, n_sensors=24, n_gateway_links=3, n_instances=60))
    >>> inst = next(i for i in ds.instances if i.node_id == "AQ-S001")
    >>> verbalise(ds, inst)
    ('[:s] {AQ-S001, AQ-GW02} ->', '(AQ-S001, CONNECTED_TO, AQ-GW02); (AQ-S001, SERVES_IN, AQ)')
    """
    if not isinstance(instance, Instance):
        raise TrainingError(f"instance = {instance!r}: must be a gentwin.topology.Instance")
    return node_prompt(dataset.topology, instance.node_id), facts_text(node_facts(dataset.topology, instance.node_id))


def parse_triples(text: str) -> list[Relation]:
    """Every well-formed ``(head, TYPE, tail)`` in ``text`` with a known relation type, in order.

    >>> parse_triples("(a, IN, b); (x, FOO, y); (c, SERVES_IN, d")
    [Relation(head='a', type='IN', tail='b')]
    """
    out = []
    for head, typ, tail in _TRIPLE_RE.findall(text):
        try:
            out.append(Relation(head, typ, tail))
        except TopologyError:
            continue
    return out


# ---------------------------------------------------------------------------
# Tokenised sequences
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Encoded:
    """Right-padded token sequences ``prompt + " " + target + <eos>``.

    ``labels`` follows the Hugging Face convention (aligned with
    ``input_ids``; the model shifts): the target tokens and the final
    end-of-sequence token, ``-100`` on the prompt and the padding.  ``spans``
    gives, per sequence, the token range ``[start, end)`` of each target piece
    (one triple with its separator).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    prompt_lengths: torch.Tensor
    lengths: torch.Tensor
    spans: tuple[tuple[tuple[int, int], ...], ...]
    prompts: tuple[str, ...]
    targets: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


def _pieces(target: str) -> list[str]:
    parts = target.split(TRIPLE_SEPARATOR)
    return [" " + p + (";" if k < len(parts) - 1 else "") for k, p in enumerate(parts)]


def encode_pairs(tokenizer, pairs: Sequence[tuple[str, str]], max_length: int = 128) -> Encoded:
    """Tokenise (prompt, target) pairs for training and teacher-forced evaluation.

    Each target piece (``" " + triple`` plus ``";"`` before the next one) is
    tokenised on its own, so every triple owns a known token range; no special
    tokens are added except one end-of-sequence token after the target.

    Raises
    ------
    TrainingError
        Empty ``pairs``, an empty target, a tokenizer without an
        end-of-sequence token, or a sequence longer than ``max_length`` (the
        message names the prompt and the length it needs).
    """
    if len(pairs) == 0:
        raise TrainingError("pairs = []: nothing to encode")
    eos = tokenizer.eos_token_id
    if eos is None:
        raise TrainingError(f"tokenizer = {type(tokenizer).__name__}: has no end-of-sequence token")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    rows, prompt_lens, spans = [], [], []
    for prompt, target in pairs:
        if not target:
            raise TrainingError(f"target = {target!r} for prompt {prompt!r}: must not be empty")
        ids = list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        p_len = len(ids)
        sp = []
        for piece in _pieces(target):
            pids = tokenizer(piece, add_special_tokens=False)["input_ids"]
            sp.append((len(ids), len(ids) + len(pids)))
            ids.extend(pids)
        ids.append(eos)
        if len(ids) > max_length:
            raise TrainingError(
                f"max_length = {max_length}: the sequence for prompt {prompt!r} needs {len(ids)} tokens; "
                "raise max_length"
            )
        rows.append(ids)
        prompt_lens.append(p_len)
        spans.append(tuple(sp))
    t = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), t), pad, dtype=torch.long)
    attention = torch.zeros((len(rows), t), dtype=torch.long)
    labels = torch.full((len(rows), t), IGNORE, dtype=torch.long)
    for k, (ids, p_len) in enumerate(zip(rows, prompt_lens)):
        input_ids[k, : len(ids)] = torch.tensor(ids)
        attention[k, : len(ids)] = 1
        labels[k, p_len: len(ids)] = torch.tensor(ids[p_len:])
    return Encoded(
        input_ids=input_ids, attention_mask=attention, labels=labels,
        prompt_lengths=torch.tensor(prompt_lens), lengths=torch.tensor([len(r) for r in rows]),
        spans=tuple(spans), prompts=tuple(p for p, _ in pairs), targets=tuple(t_ for _, t_ in pairs),
    )


@dataclass(frozen=True)
class OutputVocab:
    """The token ids the output head keeps, and the map from full ids to kept positions."""

    ids: torch.Tensor  #: (V',) sorted kept token ids
    lookup: torch.Tensor  #: (V,) kept position of each full id, -1 if dropped

    def __len__(self) -> int:
        return int(self.ids.numel())

    def restrict(self, labels: torch.Tensor) -> torch.Tensor:
        """Full-vocabulary labels -> positions in the kept list (``-100`` stays)."""
        lookup = self.lookup.to(labels.device)
        out = torch.where(labels == IGNORE, labels, lookup[labels.clamp(min=0)])
        if (out == -1).any():
            bad = sorted(set(labels[out == -1].tolist()))[:5]
            raise TrainingError(f"labels: token ids {bad} are not in the restricted output vocabulary")
        return out


def output_vocabulary(encodings: Sequence[Encoded], vocab_size: int, eos_id: int) -> OutputVocab:
    """The ids that occur as labels in ``encodings``, plus ``eos_id``.

    >>> e = Encoded(torch.tensor([[5, 7, 9, 2]]), torch.ones(1, 4, dtype=torch.long),
    ...             torch.tensor([[-100, 7, 9, 2]]), torch.tensor([1]), torch.tensor([4]), ((),), ("",), ("",))
    >>> v = output_vocabulary([e], vocab_size=12, eos_id=2)
    >>> v.ids.tolist(), v.restrict(torch.tensor([-100, 9, 2])).tolist()
    ([2, 7, 9], [-100, 2, 0])
    """
    kept = {int(eos_id)}
    for enc in encodings:
        kept.update(int(x) for x in enc.labels[enc.labels != IGNORE].unique().tolist())
    ids = torch.tensor(sorted(kept), dtype=torch.long)
    if int(ids.max()) >= vocab_size:
        raise TrainingError(f"vocab_size = {vocab_size}: the data use token id {int(ids.max())}")
    lookup = torch.full((vocab_size,), -1, dtype=torch.long)
    lookup[ids] = torch.arange(len(ids))
    return OutputVocab(ids=ids, lookup=lookup)


# ---------------------------------------------------------------------------
# The model split into a frozen lower part and the adapted top
# ---------------------------------------------------------------------------


def causal_lm(model):
    """The transformers causal LM inside ``model`` (unwraps a PEFT model)."""
    inner = getattr(model, "get_base_model", None)
    base = inner() if callable(inner) else model
    if not hasattr(base, "model") or not hasattr(base.model, "layers") or not hasattr(base, "lm_head"):
        raise TrainingError(
            f"model = {type(base).__name__}: need a LLaMA-style causal LM (model.model.layers, model.lm_head)"
        )
    return base


def split_layer(model) -> int:
    """Index of the lowest decoder layer with a Twin Adapter: everything below it is frozen and cacheable."""
    from .adapter import adapter_layer_indices

    indices = adapter_layer_indices(model)
    if not indices:
        raise TrainingError(f"model = {type(model).__name__}: has no Twin Adapters (use gentwin.adapter.add_twin_adapters)")
    return min(indices)


def _device(model) -> torch.device:
    return next(causal_lm(model).parameters()).device


def _run_layers(model, hidden: torch.Tensor, attention_mask: torch.Tensor, start: int, stop: int | None) -> torch.Tensor:
    """Decoder layers ``start:stop`` on right-padded hidden states (positions 0..T-1)."""
    from transformers.masking_utils import create_causal_mask

    inner = causal_lm(model).model
    t = hidden.shape[1]
    position_ids = torch.arange(t, device=hidden.device).unsqueeze(0)
    mask = create_causal_mask(
        config=inner.config, inputs_embeds=hidden, attention_mask=attention_mask, past_key_values=None,
        position_ids=position_ids,
    )
    pos = inner.rotary_emb(hidden, position_ids=position_ids)
    for layer in inner.layers[start:stop]:
        hidden = layer(hidden, attention_mask=mask, position_embeddings=pos, position_ids=position_ids)
    return hidden


@dataclass(frozen=True)
class FrozenStates:
    """The frozen part's output for every sequence, computed once (see :func:`frozen_states`).

    ``inside=False``: ``residual`` is the input of decoder layer ``layer``.
    ``inside=True``: the cache reaches into layer ``layer`` up to its adapter:
    ``residual`` is the residual stream after the layer's attention block and
    ``mlp_out`` the frozen feed-forward output, so the layer's output is
    ``residual + adapter(mlp_out)`` and a training step runs only the adapter
    and the layers above it.
    """

    residual: torch.Tensor
    mlp_out: torch.Tensor | None
    layer: int

    @property
    def inside(self) -> bool:
        return self.mlp_out is not None

    def take(self, rows: torch.Tensor, t: int, device) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The states of ``rows``, cut to the first ``t`` positions, on ``device``."""
        r = self.residual[rows, :t].to(device)
        m = self.mlp_out[rows, :t].to(device) if self.mlp_out is not None else None
        return r, m


def _autocast(model, compute_dtype: str):
    dev = _device(model)
    if compute_dtype == "float32":
        return torch.autocast(dev.type, enabled=False)
    if compute_dtype == "bfloat16":
        return torch.autocast(dev.type, dtype=torch.bfloat16)
    raise TrainingError(f"compute_dtype = {compute_dtype!r}: must be 'float32' or 'bfloat16'")


@torch.no_grad()
def frozen_states(
    model,
    encoded: Encoded,
    start_layer: int,
    *,
    inside: bool = True,
    batch_size: int = 32,
    compute_dtype: str = "float32",
    progress: bool = False,
) -> FrozenStates:
    """Run the frozen part once over every sequence and keep its output.

    Layers below ``start_layer`` must carry no trainable parameter.  With
    ``inside`` (and a Twin Adapter on ``start_layer``) the cache also holds
    that layer's post-attention residual and frozen MLP output; this is
    checked on the first batch (the layer's output must equal
    ``residual + adapter(mlp_out)`` exactly), otherwise the cache stops at the
    layer boundary.  Sequences are processed in order of length, each batch
    cut to its own longest sequence.
    """
    from tqdm import tqdm

    from .adapter import adapter_modules

    base = causal_lm(model)
    layers = base.model.layers
    if not 0 <= start_layer < len(layers):
        raise TrainingError(f"start_layer = {start_layer}: must be in 0..{len(layers) - 1}")
    if any(p.requires_grad for layer in layers[:start_layer] for p in layer.parameters()):
        raise TrainingError(f"start_layer = {start_layer}: layers below it have trainable parameters; they are not frozen")
    adapter = adapter_modules(model).get(start_layer) if inside else None
    dev = _device(model)
    store = torch.device("cpu") if dev.type == "cpu" else dev
    n, t_all = encoded.input_ids.shape
    hidden = base.config.hidden_size
    residual = torch.zeros((n, t_all, hidden), dtype=torch.float32, device=store)
    mlp_out = torch.zeros_like(residual) if adapter is not None else None
    order = torch.argsort(encoded.lengths, descending=True, stable=True)
    layer = layers[start_layer]
    captured: dict[str, torch.Tensor] = {}
    hooks = []
    if adapter is not None:
        hooks.append(layer.post_attention_layernorm.register_forward_pre_hook(
            lambda mod, args: captured.__setitem__("residual", args[0])))
        hooks.append(layer.mlp.base_layer.register_forward_hook(
            lambda mod, args, out: captured.__setitem__("mlp_out", out)))
    try:
        with _autocast(model, compute_dtype):
            for s in tqdm(range(0, n, batch_size), desc="frozen part", disable=not progress, leave=False):
                rows = order[s: s + batch_size]
                t = int(encoded.lengths[rows].max())
                ids = encoded.input_ids[rows, :t].to(dev)
                att = encoded.attention_mask[rows, :t].to(dev)
                h = _run_layers(model, base.model.embed_tokens(ids), att, 0, start_layer)
                residual_rows = h
                if mlp_out is not None:
                    out = _run_layers(model, h, att, start_layer, start_layer + 1)
                    res, m = captured["residual"], captured["mlp_out"]
                    if s == 0 and not torch.equal(out, res + adapter(m)):
                        # not a LLaMA-style residual layout: cache at the layer boundary instead
                        for hk in hooks:
                            hk.remove()
                        hooks.clear()
                        return frozen_states(model, encoded, start_layer, inside=False, batch_size=batch_size,
                                             compute_dtype=compute_dtype, progress=progress)
                    residual_rows = res
                    mlp_out[rows.to(store), :t] = m.float().to(store)
                residual[rows.to(store), :t] = residual_rows.float().to(store)
    finally:
        for hk in hooks:
            hk.remove()
    return FrozenStates(residual=residual, mlp_out=mlp_out, layer=start_layer)


def top_hidden(model, states: tuple[torch.Tensor, torch.Tensor | None], attention_mask: torch.Tensor, start_layer: int) -> torch.Tensor:
    """Final normed hidden states from cached frozen states (see :class:`FrozenStates`).

    ``states`` is ``(residual, mlp_out)`` from :meth:`FrozenStates.take`;
    with ``mlp_out`` the layer ``start_layer`` is finished as
    ``residual + adapter(mlp_out)``, then the layers above it and the final
    norm run.
    """
    from .adapter import adapter_modules

    residual, mlp_out = states
    if mlp_out is None:
        h = _run_layers(model, residual, attention_mask, start_layer, None)
    else:
        h = residual + adapter_modules(model)[start_layer](mlp_out)
        h = _run_layers(model, h, attention_mask, start_layer + 1, None)
    return causal_lm(model).model.norm(h)


def full_hidden(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Final normed hidden states from a plain forward pass of the whole (possibly PEFT-wrapped) model."""
    return causal_lm(model).model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def head_logits(model, hidden: torch.Tensor, vocab: OutputVocab | None = None) -> torch.Tensor:
    """The output head on ``hidden``: all words, or only the rows of ``vocab`` (same values at kept ids)."""
    head = causal_lm(model).lm_head
    weight, bias = head.weight, getattr(head, "bias", None)
    if vocab is not None:
        ids = vocab.ids.to(weight.device)
        weight = weight[ids]
        bias = bias[ids] if bias is not None else None
    return F.linear(hidden, weight, bias)


def _target_positions(hidden: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Hidden states that predict a label (position t predicts token t+1) and those labels."""
    nxt = labels[:, 1:]
    keep = nxt != IGNORE
    return hidden[:, :-1][keep], nxt[keep]


def target_loss(model, hidden: torch.Tensor, labels: torch.Tensor, vocab: OutputVocab | None = None) -> torch.Tensor:
    """Mean cross-entropy over the target tokens only (prompt and padding masked by ``-100``).

    With ``vocab`` the softmax runs over the restricted output vocabulary.
    """
    h, y = _target_positions(hidden, labels.to(hidden.device))
    if y.numel() == 0:
        raise TrainingError("labels: no target token in the batch (all -100)")
    logits = head_logits(model, h, vocab)
    if vocab is not None:
        y = vocab.restrict(y)
    return F.cross_entropy(logits.float(), y)


# ---------------------------------------------------------------------------
# Metrics: eq. (9) and the triple scores
# ---------------------------------------------------------------------------


def l1_loss(r, r_hat) -> float:
    r"""Eq. (9): mean absolute error between the true and produced relation indicators.

    .. math:: L_1 = \frac{\sum_{i=1}^{M} |r_i - \hat r_i|}{M}

    ``r_i = 1`` when relation ``i`` is true, ``r̂_i = 1`` when the model
    produces it (values in [0, 1] are accepted, e.g. probabilities).  Which
    ``M`` relations are indexed is chosen by :func:`relation_indicators`.

    Examples
    --------
    Four indexed relations; three are true, the model produces the first two
    true ones and one false one: ``(|1-1| + |1-1| + |1-0| + |0-1|) / 4 = 0.5``.

    >>> l1_loss([1, 1, 1, 0], [1, 1, 0, 1])
    0.5
    >>> l1_loss([1, 0], [1])
    Traceback (most recent call last):
    ...
    gentwin.training.TrainingError: r_hat: has 1 entries but r has 2 (one per indexed relation)
    """
    a = np.asarray(r, dtype=float)
    b = np.asarray(r_hat, dtype=float)
    if a.ndim != 1 or a.size == 0:
        raise TrainingError(f"r = {r!r}: must be a non-empty vector (one entry per indexed relation)")
    if b.shape != a.shape:
        raise TrainingError(f"r_hat: has {b.size} entries but r has {a.size} (one per indexed relation)")
    for name, x in (("r", a), ("r_hat", b)):
        if not np.isfinite(x).all() or (x < 0).any() or (x > 1).any():
            raise TrainingError(f"{name} = {x.tolist()}: entries must be in [0, 1]")
    return float(np.abs(a - b).sum() / a.size)


def relation_indicators(gold: Iterable, produced: Iterable, index: str = "union") -> tuple[np.ndarray, np.ndarray, list]:
    """The vectors ``r`` and ``r̂`` of eq. (9) and the relations they index.

    ``index="union"``: the M relations are the true ones and the produced ones
    together, so a produced false relation counts as an error
    (``L1 = |G Δ P| / |G ∪ P|``).  ``index="gold"``: only the true ones
    (``L1 = 1 - recall``; false relations are invisible).

    >>> r, r_hat, rels = relation_indicators({"a", "b", "c"}, {"a", "b", "x"})
    >>> rels, r.tolist(), r_hat.tolist()
    (['a', 'b', 'c', 'x'], [1, 1, 1, 0], [1, 1, 0, 1])
    >>> relation_indicators({"a", "b"}, {"a", "x"}, index="gold")[1].tolist()
    [1, 0]
    """
    if index not in ("union", "gold"):
        raise TrainingError(f"l1_index = {index!r}: must be 'union' or 'gold'")
    g, p = set(gold), set(produced)
    rels = sorted(g | p) if index == "union" else sorted(g)
    r = np.array([1 if x in g else 0 for x in rels], dtype=int)
    r_hat = np.array([1 if x in p else 0 for x in rels], dtype=int)
    return r, r_hat, rels


def triple_scores(gold: Sequence[Iterable[Relation]], produced: Sequence[Iterable[Relation]], index: str = "union") -> dict[str, float]:
    """Micro-averaged accuracy, precision and eq. (9) L1 over entities.

    ``gold[e]`` and ``produced[e]`` are entity ``e``'s true and produced
    triples; a produced triple is correct only for the entity whose prompt
    produced it.

    >>> g = [{Relation("s", "IN", "a"), Relation("s", "SERVES_IN", "b")}, {Relation("t", "IN", "a")}]
    >>> p = [{Relation("s", "IN", "a"), Relation("s", "IN", "z")}, set()]
    >>> sc = triple_scores(g, p)
    >>> sc["accuracy"], sc["precision"], sc["l1"]  # 1/3, 1/2, (0+1+1 + 1) / 4
    (0.3333333333333333, 0.5, 0.75)
    """
    if len(gold) != len(produced):
        raise TrainingError(f"produced: {len(produced)} entities but gold has {len(gold)}")
    if len(gold) == 0:
        raise TrainingError("gold = []: no entity to score")
    g_all = {(e, x) for e, s in enumerate(gold) for x in s}
    p_all = {(e, x) for e, s in enumerate(produced) for x in s}
    if not g_all:
        raise TrainingError("gold: the entities have no true relation")
    correct = len(g_all & p_all)
    r, r_hat, _ = relation_indicators(g_all, p_all, index)
    return {
        "accuracy": correct / len(g_all),
        "precision": correct / len(p_all) if p_all else 0.0,
        "l1": l1_loss(r, r_hat),
        "n_gold": float(len(g_all)),
        "n_produced": float(len(p_all)),
        "n_correct": float(correct),
    }


def pooling_gain(with_pooling: Sequence[float], without_pooling: Sequence[float]) -> float:
    """Extra relations extracted with pooling, in % of those without, summed over rounds.

    ``100 (Σ_r E_pool(r) - Σ_r E_random(r)) / Σ_r E_random(r)``: the ratio of the
    areas under the two Fig. 6 curves (a per-round ratio would explode on
    rounds where the random order extracts almost nothing).

    >>> pooling_gain([12, 24], [10, 20])
    20.0
    """
    a = np.asarray(with_pooling, dtype=float)
    b = np.asarray(without_pooling, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise TrainingError(f"with_pooling, without_pooling: need two non-empty curves of equal length ({a.shape}, {b.shape})")
    if b.sum() <= 0:
        raise TrainingError("without_pooling: extracted nothing in any round; the gain is undefined")
    return float(100.0 * (a.sum() - b.sum()) / b.sum())


# ---------------------------------------------------------------------------
# The task: every device node's sequence, its frozen states and the output vocabulary
# ---------------------------------------------------------------------------


@dataclass
class TwinTask:
    """Everything the training loop reuses across epochs, seeds and conditions.

    One row per device node of the topology (sensors and gateways, topology
    order); instances map to the row of their node.  ``frozen`` holds the
    frozen part's output (None for the plain path); ``compute_dtype`` is the
    autocast type of every forward pass on this task.
    """

    tokenizer: Any
    dataset: DataSet
    node_ids: list[str]
    row_of: dict[str, int]
    gold: list[frozenset[Relation]]
    encoded: Encoded
    vocab: OutputVocab | None
    frozen: FrozenStates | None
    max_length: int
    compute_dtype: str = "float32"

    @property
    def start_layer(self) -> int | None:
        """The lowest adapted layer (where the cached part ends), or None without a cache."""
        return None if self.frozen is None else self.frozen.layer

    def rows(self, instances: Sequence[Instance]) -> torch.Tensor:
        """Row of each instance's node."""
        try:
            return torch.tensor([self.row_of[i.node_id] for i in instances], dtype=torch.long)
        except KeyError as err:
            raise TrainingError(f"instances: node {err.args[0]!r} is not a device node of the task's topology") from None

    def split_rows(self, split: str) -> list[int]:
        """Rows of the unique nodes observed in ``split`` (sorted)."""
        return sorted({self.row_of[i.node_id] for i in self.dataset.split(split)})

    @property
    def max_target_tokens(self) -> int:
        """Longest target incl. end-of-sequence (bounds greedy decoding)."""
        return int((self.encoded.lengths - self.encoded.prompt_lengths).max())


def prepare_task(
    model,
    tokenizer,
    dataset: DataSet,
    *,
    max_length: int = 128,
    restrict_vocab: bool = True,
    cache: bool = True,
    batch_size: int = 32,
    extra_targets: Sequence[str] = (),
    inside: bool = True,
    compute_dtype: str = "float32",
    progress: bool = False,
) -> TwinTask:
    """Verbalise and tokenise every device node once and run the frozen part once.

    Parameters
    ----------
    model
        The backbone with Twin Adapters (or, with ``cache=False``, any causal
        LM, e.g. the LoRA baseline).
    restrict_vocab
        Keep only the token ids that occur in the targets (and in
        ``extra_targets``, e.g. the question/answer pass) plus end-of-sequence.
    cache
        Run the frozen part now (:func:`frozen_states`; ``inside`` lets the
        cache reach into the lowest adapted layer up to its adapter).
    compute_dtype
        ``"float32"`` or ``"bfloat16"`` (autocast) for every forward pass on
        this task: the frozen part, training steps, evaluation and decoding.
    """
    devices = dataset.topology.devices()
    if not devices:
        raise TrainingError("dataset: the topology has no sensor or gateway")
    degrees = dataset.topology.gateway_degrees()
    node_ids = [n.id for n in devices]
    pairs = []
    gold = []
    for n in devices:
        facts = node_facts(dataset.topology, n.id)
        pairs.append((node_prompt(dataset.topology, n.id, degrees.get(n.id)), facts_text(facts)))
        gold.append(frozenset(facts))
    encoded = encode_pairs(tokenizer, pairs, max_length=max_length)
    vocab = None
    if restrict_vocab:
        extra = [encode_pairs(tokenizer, [("", t)], max_length=max_length) for t in extra_targets]
        vocab = output_vocabulary([encoded, *extra], causal_lm(model).lm_head.weight.shape[0], tokenizer.eos_token_id)
    _autocast(model, compute_dtype)  # validates compute_dtype before the long pass
    frozen = None
    if cache:
        frozen = frozen_states(model, encoded, split_layer(model), inside=inside, batch_size=batch_size,
                               compute_dtype=compute_dtype, progress=progress)
    return TwinTask(
        tokenizer=tokenizer, dataset=dataset, node_ids=node_ids, row_of={k: i for i, k in enumerate(node_ids)},
        gold=gold, encoded=encoded, vocab=vocab, frozen=frozen, max_length=max_length, compute_dtype=compute_dtype,
    )


def reset_adapters(model, seed: int) -> None:
    """Re-draw every Twin Adapter as :func:`gentwin.adapter.add_twin_adapters` would with ``seed``.

    ``W_D`` from a generator seeded with ``seed`` (layers in ascending order),
    ``W_U = 0``: the model equals the backbone again, so one loaded backbone
    serves every seed.
    """
    from .adapter import adapter_modules

    mods = adapter_modules(model)
    if not mods:
        raise TrainingError(f"model = {type(model).__name__}: has no Twin Adapters to reset")
    cfg = getattr(model, "twin_adapter_config", None)
    scale = getattr(cfg, "init_scale", 1.0)
    gen = torch.Generator().manual_seed(int(seed))
    for i in sorted(mods):
        mods[i].reset_parameters(scale, gen)


# ---------------------------------------------------------------------------
# Producing triples: teacher-forced arg-max and greedy decoding
# ---------------------------------------------------------------------------


def _batch_hidden(model, task: TwinTask, rows: torch.Tensor, path: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Final hidden states, labels and attention mask for ``rows``, trimmed to the batch's length."""
    dev = _device(model)
    t = int(task.encoded.lengths[rows].max())
    att = task.encoded.attention_mask[rows, :t].to(dev)
    labels = task.encoded.labels[rows, :t].to(dev)
    with _autocast(model, task.compute_dtype):
        h = _hidden_for(model, task, rows, t, att, dev, path)
    return h, labels, att


def _hidden_for(model, task: TwinTask, rows: torch.Tensor, t: int, att: torch.Tensor, dev, path: str) -> torch.Tensor:
    if path == "cached":
        if task.frozen is None:
            raise TrainingError("path = 'cached': the task has no frozen states (prepare_task(..., cache=True))")
        h = top_hidden(model, task.frozen.take(rows, t, dev), att, task.frozen.layer)
    elif path == "plain":
        h = full_hidden(model, task.encoded.input_ids[rows, :t].to(dev), att)
    else:
        raise TrainingError(f"path = {path!r}: must be 'cached' or 'plain'")
    return h


@torch.no_grad()
def _teacher_forced(model, task: TwinTask, rows: Sequence[int], path: str, batch_size: int,
                    chunk: int = 1024) -> tuple[list[list[int]], list[float]]:
    """Arg-max next token at every target-predicting position of each row, and each row's mean target loss.

    ``preds[k][t]`` is the token predicted after position ``t`` (``-1`` where
    position ``t + 1`` is not a target token).  The head runs only on the
    target-predicting positions, ``chunk`` rows at a time.
    """
    rows = list(rows)
    preds: list[list[int]] = [[] for _ in rows]
    losses: list[float] = [0.0] * len(rows)
    # batches of similar length waste less compute on padding; results go back to the caller's order
    by_len = sorted(range(len(rows)), key=lambda k: int(task.encoded.lengths[rows[k]]))
    for s in range(0, len(rows), batch_size):
        pos = by_len[s: s + batch_size]
        b = torch.as_tensor([rows[k] for k in pos], dtype=torch.long)
        h, labels, _ = _batch_hidden(model, task, b, path)
        nxt = labels[:, 1:]
        keep = nxt != IGNORE
        h_sel, y_sel = h[:, :-1][keep], nxt[keep]
        best_parts, loss_parts = [], []
        for c in range(0, len(y_sel), chunk):
            with _autocast(model, task.compute_dtype):
                logits = head_logits(model, h_sel[c: c + chunk], task.vocab).float()
            y = task.vocab.restrict(y_sel[c: c + chunk]) if task.vocab is not None else y_sel[c: c + chunk]
            loss_parts.append(F.cross_entropy(logits, y, reduction="none"))
            best = logits.argmax(-1)
            best_parts.append(task.vocab.ids.to(best.device)[best] if task.vocab is not None else best)
        grid = torch.full(nxt.shape, -1, dtype=torch.long, device=h.device)
        grid[keep] = torch.cat(best_parts)
        tok_loss = torch.zeros(nxt.shape, device=h.device)
        tok_loss[keep] = torch.cat(loss_parts)
        for k, pr, lo in zip(pos, grid.cpu().tolist(), (tok_loss.sum(1) / keep.sum(1)).tolist()):
            preds[k], losses[k] = pr, lo
    return preds, losses


def greedy_generate(
    model,
    tokenizer,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    vocab: OutputVocab | None = None,
    batch_size: int = 64,
    compute_dtype: str = "float32",
    progress: bool = False,
) -> list[list[int]]:
    """Greedy decoding of token-id prompts (left-padded batches, KV cache), stopping at end-of-sequence.

    With ``vocab`` the arg-max runs over the restricted output vocabulary
    only.  Returns the new token ids of each prompt (without the
    end-of-sequence token).
    """
    from tqdm import tqdm
    from transformers import DynamicCache

    if max_new_tokens < 1:
        raise TrainingError(f"max_new_tokens = {max_new_tokens}: must be >= 1")
    base = causal_lm(model)
    dev = _device(model)
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    kept = vocab.ids.to(dev) if vocab is not None else None
    out: list[list[int]] = []
    was_training = base.training
    base.eval()
    try:
        with torch.no_grad(), _autocast(model, compute_dtype):
            for s in tqdm(range(0, len(prompts), batch_size), desc="generate", disable=not progress, leave=False):
                chunk = [list(p) for p in prompts[s: s + batch_size]]
                t = max(len(p) for p in chunk)
                ids = torch.full((len(chunk), t), pad, dtype=torch.long)
                att = torch.zeros((len(chunk), t), dtype=torch.long)
                for k, p in enumerate(chunk):
                    if len(p) == 0:
                        raise TrainingError(f"prompts[{s + k}]: is empty")
                    ids[k, t - len(p):] = torch.tensor(p)
                    att[k, t - len(p):] = 1
                ids, att = ids.to(dev), att.to(dev)
                pos = (att.cumsum(1) - 1).clamp(min=0)
                cache = DynamicCache(config=base.config)
                done = torch.zeros(len(chunk), dtype=torch.bool, device=dev)
                new: list[torch.Tensor] = []
                step_ids, step_pos = ids, pos
                for _ in range(max_new_tokens):
                    h = base.model(input_ids=step_ids, attention_mask=att, position_ids=step_pos,
                                   past_key_values=cache, use_cache=True).last_hidden_state[:, -1]
                    logits = head_logits(model, h, vocab)
                    nxt = logits.argmax(-1)
                    if kept is not None:
                        nxt = kept[nxt]
                    nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
                    new.append(nxt)
                    done |= nxt == eos
                    if bool(done.all()):
                        break
                    step_ids = nxt.unsqueeze(1)
                    step_pos = step_pos[:, -1:] + 1
                    att = torch.cat([att, torch.ones_like(att[:, :1])], dim=1)
                gen = torch.stack(new, 1).cpu().tolist()
                for row in gen:
                    cut = row.index(eos) if eos in row else len(row)
                    out.append(row[:cut])
    finally:
        base.train(was_training)
    return out


def predict_triples(
    model,
    task: TwinTask,
    rows: Sequence[int],
    *,
    mode: str = "teacher_forced",
    path: str = "cached",
    batch_size: int = 64,
    shortcut: bool = True,
    progress: bool = False,
) -> tuple[list[set[Relation]], list[float]]:
    """The triples the model produces for each row, and each row's teacher-forced target loss.

    ``mode="teacher_forced"``: per gold triple, the arg-max tokens at its
    positions, decoded and parsed.  ``mode="generate"``: greedy decoding from
    the prompt, parsed; with ``shortcut`` rows whose teacher-forced arg-max
    reproduces the whole target (end-of-sequence included) are taken as
    decoded to exactly that target, and the others are decoded from the
    first position where the arg-max leaves the gold sequence (greedy
    decoding agrees with the gold tokens up to there).
    """
    if mode not in ("teacher_forced", "generate"):
        raise TrainingError(f"eval_mode = {mode!r}: must be 'teacher_forced' or 'generate'")
    rows = list(rows)
    tok = task.tokenizer
    enc = task.encoded
    if mode == "generate" and not shortcut:
        _, losses = _teacher_forced(model, task, rows, path, batch_size)
        prompts = [enc.input_ids[r, : int(enc.prompt_lengths[r])].tolist() for r in rows]
        gen = greedy_generate(model, tok, prompts, max_new_tokens=task.max_target_tokens, vocab=task.vocab,
                              batch_size=batch_size, compute_dtype=task.compute_dtype, progress=progress)
        return [set(parse_triples(tok.decode(g))) for g in gen], losses
    preds, losses = _teacher_forced(model, task, rows, path, batch_size)
    produced: list[set[Relation]] = []
    todo: list[tuple[int, list[int]]] = []
    for k, r in enumerate(rows):
        n = int(enc.lengths[r])
        gold_ids = enc.input_ids[r, :n].tolist()
        pred_next = preds[k]  # pred_next[t] predicts token t + 1
        if mode == "teacher_forced":
            got = set()
            for a, b in enc.spans[r]:
                guess = pred_next[a - 1: b - 1]
                gold_piece = parse_triples(tok.decode(gold_ids[a:b]))
                if guess == gold_ids[a:b]:
                    got.update(gold_piece)
                else:  # not token-exact: whatever else the arg-max spells there is a wrong triple
                    got.update(set(parse_triples(tok.decode(guess))) - set(gold_piece))
            produced.append(got)
            continue
        p_len = int(enc.prompt_lengths[r])
        first_bad = next((t for t in range(p_len, n) if pred_next[t - 1] != gold_ids[t]), None)
        if first_bad is None:
            produced.append(set(task.gold[r]))
            continue
        produced.append(set())
        todo.append((k, gold_ids[:first_bad] + [pred_next[first_bad - 1]]))
    if todo:
        budget = task.max_target_tokens
        eos = tok.eos_token_id
        open_rows = []
        for k, prefix in todo:
            target_ids = prefix[int(enc.prompt_lengths[rows[k]]):]
            if target_ids[-1] == eos:  # the first wrong token ends the sequence early
                produced[k] = set(parse_triples(tok.decode(target_ids[:-1])))
            else:
                open_rows.append((k, prefix, target_ids))
        if open_rows:
            # greedy decoding is deterministic per row: decode all for the longest remainder, then cut each
            remaining = max(1, budget - min(len(t) for _, _, t in open_rows))
            gen = greedy_generate(model, tok, [p for _, p, _ in open_rows], max_new_tokens=remaining,
                                  vocab=task.vocab, batch_size=batch_size, compute_dtype=task.compute_dtype,
                                  progress=progress)
            for (k, _, target_ids), g in zip(open_rows, gen):
                produced[k] = set(parse_triples(tok.decode((target_ids + g)[:budget])))
    return produced, losses


def evaluate(
    model,
    task: TwinTask,
    rows: Sequence[int],
    *,
    mode: str = "teacher_forced",
    l1_index: str = "union",
    path: str = "cached",
    batch_size: int = 64,
    progress: bool = False,
) -> dict[str, float]:
    """Accuracy, precision, eq. (9) L1 and mean target loss over the entities of ``rows``."""
    rows = list(rows)
    if not rows:
        raise TrainingError("rows = []: no entity to evaluate")
    produced, losses = predict_triples(model, task, rows, mode=mode, path=path, batch_size=batch_size, progress=progress)
    scores = triple_scores([task.gold[r] for r in rows], produced, index=l1_index)
    scores["loss"] = float(np.mean(losses))
    scores["entities"] = float(len(rows))
    return scores


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------


def make_optimizer(parameters: Iterable[torch.nn.Parameter], name: str, learning_rate: float) -> torch.optim.Optimizer:
    """``"sgd"`` (plain stochastic gradient descent, the reading of lr = 0.08) or ``"adamw"``."""
    params = [p for p in parameters if p.requires_grad]
    if not params:
        raise TrainingError("model: has no trainable parameter (add Twin Adapters or LoRA first)")
    if name == "sgd":
        return torch.optim.SGD(params, lr=learning_rate)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.0)
    raise TrainingError(f"optimizer = {name!r}: must be 'sgd' or 'adamw'")


def _trainable_modules_train(model, on: bool) -> None:
    """Train mode only where there are trainable parameters (adapter/LoRA dropout); the backbone stays in eval."""
    causal_lm(model).eval()
    if on:
        for m in model.modules():
            if any(p.requires_grad for p in m.parameters(recurse=False)):
                m.train()


def _check_instances(instances: Sequence[Instance], name: str) -> list[Instance]:
    items = list(instances)
    if not items:
        raise TrainingError(f"{name} = []: the training split is empty; nothing to train on")
    return items


def _train_pass(model, task: TwinTask, rows: torch.Tensor, optimizer, batch_size: int, path: str) -> float:
    """One pass over ``rows`` in the given order; returns the mean batch loss."""
    _trainable_modules_train(model, True)
    losses = []
    try:
        for s in range(0, len(rows), batch_size):
            b = rows[s: s + batch_size]
            h, labels, _ = _batch_hidden(model, task, b, path)
            with _autocast(model, task.compute_dtype):
                loss = target_loss(model, h, labels, task.vocab)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
    finally:
        _trainable_modules_train(model, False)
    return float(np.mean(losses))


def _pass_rows(rows: torch.Tensor, shuffle: bool, generator: torch.Generator) -> torch.Tensor:
    """The rows of one training pass: as given, or in a permutation drawn from ``generator``."""
    if not shuffle:
        return rows
    return rows[torch.randperm(len(rows), generator=generator)]


def _eval_rows(task: TwinTask, train_rows: torch.Tensor, split: str) -> list[int]:
    if split == "train":
        return sorted(set(train_rows.tolist()))
    if split == "all":
        return list(range(len(task.node_ids)))
    rows = task.split_rows(split)
    if not rows:
        raise TrainingError(f"eval split = {split!r}: has no instance")
    return rows


def train_twin(
    model,
    task: TwinTask,
    order: Sequence[Instance],
    config: TrainingConfig,
    *,
    seed: int,
    epochs: int | None = None,
    eval_splits: Sequence[str] = ("train", "validation"),
    eval_mode: str | None = None,
    eval_every: int = 1,
    path: str = "cached",
    progress: bool = False,
    on_epoch: Callable[[int, dict], None] | None = None,
):
    """Algorithm 1 lines 9-12: train the adapters on ``order`` (in this order every epoch), scoring each epoch.

    Learning rate, decay, batch size, optimiser and epochs come from
    ``config`` (:class:`gentwin.config.TrainingConfig`): the learning rate of
    epoch ``e`` (0-based) is ``learning_rate * discount_factor ** e``.  With
    ``config.shuffle_passes`` every epoch visits the instances in a fresh
    permutation drawn from ``seed``; otherwise in the order given.
    ``seed`` seeds the torch RNG for the run (adapter dropout); the adapter
    initialisation is the caller's (:func:`reset_adapters`).

    The splits in ``eval_splits`` (``"train"`` = the unique nodes of
    ``order``; ``"validation"``, ``"test"``, ``"all"``) are evaluated before
    training and after every ``eval_every``-th epoch and the last one.

    Returns
    -------
    pandas.DataFrame
        One row per evaluated epoch (0 = before training) and split, with
        ``accuracy, precision, l1, loss`` (teacher-forced target loss on the
        split's entities), ``train_loss`` (mean batch loss of the epoch),
        ``lr``, ``seconds`` (training time of the epoch) and the counts;
        epochs without evaluation get one row with ``split = "none"``.
    """
    import pandas as pd
    from tqdm import tqdm

    items = _check_instances(order, "order")
    n_epochs = config.epochs if epochs is None else int(epochs)
    if n_epochs < 1:
        raise TrainingError(f"epochs = {n_epochs}: must be >= 1")
    if eval_every < 1:
        raise TrainingError(f"eval_every = {eval_every}: must be >= 1")
    mode = config.eval_mode if eval_mode is None else eval_mode
    rows = task.rows(items)
    eval_rows = {s: _eval_rows(task, rows, s) for s in eval_splits}
    records: list[dict[str, Any]] = []

    def record(epoch: int, train_loss: float, lr: float, seconds: float) -> None:
        row = dict(epoch=epoch, seed=seed, train_loss=train_loss, lr=lr, seconds=seconds)
        if epoch % eval_every and epoch != n_epochs:
            records.append(dict(row, split="none"))
            return
        for split, er in eval_rows.items():
            sc = evaluate(model, task, er, mode=mode, l1_index=config.l1_index, path=path,
                          batch_size=config.eval_batch_size)
            records.append(dict(row, split=split, **sc))
        if not eval_rows:
            records.append(dict(row, split="none"))

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        optimizer = make_optimizer(model.parameters(), config.optimizer, config.learning_rate)
        scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=config.discount_factor)
        record(0, float("nan"), 0.0, 0.0)
        gen = torch.Generator().manual_seed(int(seed))
        bar = tqdm(range(1, n_epochs + 1), desc=f"epochs (seed {seed})", disable=not progress, leave=False)
        for epoch in bar:
            lr = optimizer.param_groups[0]["lr"]
            t0 = time.perf_counter()
            loss = _train_pass(model, task, _pass_rows(rows, config.shuffle_passes, gen), optimizer,
                               config.batch_size, path)
            seconds = time.perf_counter() - t0
            scheduler.step()
            record(epoch, loss, lr, seconds)
            if on_epoch is not None:
                on_epoch(epoch, records[-1])
            bar.set_postfix(loss=f"{loss:.3f}")
    return pd.DataFrame(records)


# ---------------------------------------------------------------------------
# Fig. 6: extracted relations per training round
# ---------------------------------------------------------------------------


def round_slices(n: int, rounds: int, mode: str = "cumulative") -> list[tuple[int, int]]:
    """Which part ``[start, end)`` of an ``n``-instance training stream each round trains on.

    The stream is cut into ``rounds`` consecutive chunks of (nearly) equal
    size.  ``"cumulative"``: round r is one pass over everything fed so far
    (chunks 1..r, in stream order).  ``"chunk"``: round r is one pass over
    chunk r only (each instance is seen once in all).

    >>> round_slices(10, 3)
    [(0, 4), (0, 7), (0, 10)]
    >>> round_slices(10, 3, mode="chunk")
    [(0, 4), (4, 7), (7, 10)]
    """
    if n < 1:
        raise TrainingError(f"n = {n}: the training stream is empty")
    if rounds < 1 or rounds > n:
        raise TrainingError(f"rounds = {rounds}: must be between 1 and the {n} training instances")
    if mode not in ("cumulative", "chunk"):
        raise TrainingError(f"round_mode = {mode!r}: must be 'cumulative' or 'chunk'")
    ends = [int(math.ceil(n * (r + 1) / rounds)) for r in range(rounds)]
    starts = [0] * rounds if mode == "cumulative" else [0] + ends[:-1]
    return list(zip(starts, ends))


def extraction_curve(
    model,
    task: TwinTask,
    order: Sequence[Instance],
    config: TrainingConfig,
    *,
    seed: int,
    rounds: int | None = None,
    eval_mode: str | None = None,
    progress: bool = False,
):
    """Fig. 6: unique correct triples over the whole topology after each training round (Algorithm 1 lines 9-11).

    The training stream is ``order``; round r trains one pass over the part
    :func:`round_slices` gives (``config.round_mode``), shuffled with ``seed``
    when ``config.shuffle_passes`` (the order decides *which* instances have
    been fed by round r; inside a pass they come in random order), the
    learning rate decays by ``discount_factor`` per round, and after every
    round the model produces
    triples for every device node (``eval_mode``).  Columns: ``round``,
    ``extracted`` (unique produced triples that are true relations of the
    topology), ``produced``, ``precision``, ``recall``, ``fed`` (instances fed
    so far), ``train_loss``.
    """
    import pandas as pd
    from tqdm import tqdm

    items = _check_instances(order, "order")
    n_rounds = config.rounds if rounds is None else int(rounds)
    mode = config.eval_mode if eval_mode is None else eval_mode
    rows = task.rows(items)
    truth = set(task.dataset.topology.device_relations())
    all_rows = list(range(len(task.node_ids)))
    records = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        optimizer = make_optimizer(model.parameters(), config.optimizer, config.learning_rate)
        scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=config.discount_factor)
        gen = torch.Generator().manual_seed(int(seed))
        for r, (a, b) in enumerate(tqdm(round_slices(len(rows), n_rounds, config.round_mode), desc=f"rounds (seed {seed})",
                                        disable=not progress, leave=False), start=1):
            loss = _train_pass(model, task, _pass_rows(rows[a:b], config.shuffle_passes, gen), optimizer,
                               config.batch_size, "cached")
            scheduler.step()
            produced, _ = predict_triples(model, task, all_rows, mode=mode, batch_size=config.eval_batch_size)
            graph = set().union(*produced)
            cmp = compare_graph(graph, truth)
            records.append(dict(round=r, seed=seed, fed=b, train_loss=loss, extracted=cmp["correct"],
                                produced=cmp["produced"], precision=cmp["precision"], recall=cmp["recall"]))
    return pd.DataFrame(records)


# ---------------------------------------------------------------------------
# The knowledge graph G = (V, E) generated by the model
# ---------------------------------------------------------------------------


def extract_graph(model, task: TwinTask, *, mode: str = "generate", batch_size: int = 64, progress: bool = False) -> set[Relation]:
    """Algorithm 1 line 11: generate G, every triple the model produces for each device node's (k, v) pair.

    The result is E of the generated graph G = (V, E) (V = the triples' end
    points); compare it with the truth with :func:`compare_graph`.
    """
    produced, _ = predict_triples(model, task, range(len(task.node_ids)), mode=mode, batch_size=batch_size,
                                  progress=progress)
    return set().union(*produced)


def compare_graph(generated: Iterable[Relation], truth: Iterable[Relation] | Topology) -> dict[str, float]:
    """Precision and recall of a generated edge set against the true relations.

    ``truth`` is a set of relations or a topology (its device relations, the
    M of eq. (3)).

    >>> t = {Relation("a", "IN", "b"), Relation("c", "IN", "b")}
    >>> compare_graph({Relation("a", "IN", "b"), Relation("a", "IN", "c")}, t)
    {'true': 2, 'produced': 2, 'correct': 1, 'precision': 0.5, 'recall': 0.5}
    """
    true = set(truth.device_relations()) if isinstance(truth, Topology) else set(truth)
    gen = set(generated)
    if not true:
        raise TrainingError("truth: has no relation")
    correct = len(gen & true)
    return {"true": len(true), "produced": len(gen), "correct": correct,
            "precision": correct / len(gen) if gen else 0.0, "recall": correct / len(true)}


# ---------------------------------------------------------------------------
# Algorithm 1 line 14: feed generated question/answer prompts back
# ---------------------------------------------------------------------------

_QUESTIONS = {
    "CONNECTED_TO": "Q: What is {head} connected to? A:",
    "SERVES_IN": "Q: Which service does {head} serve in? A:",
    "IN": "Q: Where is {head}? A:",
}


def qa_pairs(relations: Iterable[Relation]) -> list[tuple[str, str]]:
    """Question/answer prompts verbalised from triples: one per (head, relation type).

    The answer lists the tails, sorted, joined by ``", "``.

    >>> qa_pairs([Relation("AQ-S017", "CONNECTED_TO", "AQ-GW03"), Relation("AQ-S017", "SERVES_IN", "AQ")])
    [('Q: What is AQ-S017 connected to? A:', 'AQ-GW03'), ('Q: Which service does AQ-S017 serve in? A:', 'AQ')]
    """
    grouped: dict[tuple[str, str], list[str]] = {}
    for rel in relations:
        grouped.setdefault((rel.head, rel.type), []).append(rel.tail)
    return [(_QUESTIONS[typ].format(head=head), ", ".join(sorted(tails))) for (head, typ), tails in sorted(grouped.items())]


def qa_feedback(
    model,
    task: TwinTask,
    generated: Iterable[Relation],
    config: TrainingConfig,
    *,
    seed: int,
    epochs: int | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """Algorithm 1 line 14: fine-tune on question/answer prompts made from the model's own triples.

    The generated triples (e.g. :func:`extract_graph`) become
    :func:`qa_pairs`; their frozen part is computed once, then the adapters
    train ``epochs`` (default ``config.qa_epochs``) passes over them with the
    task's optimiser settings.  Pairs with answer tokens outside the task's
    output vocabulary are skipped.  Returns ``pairs``, ``skipped`` and the
    mean loss of the last pass.
    """
    pairs = qa_pairs(generated)
    if not pairs:
        raise TrainingError("generated: no triple to turn into question/answer prompts")
    n_epochs = config.qa_epochs if epochs is None else int(epochs)
    enc = encode_pairs(task.tokenizer, pairs, max_length=task.max_length)
    keep = list(range(len(pairs)))
    if task.vocab is not None:
        lab = enc.labels
        ok = ((lab == IGNORE) | (task.vocab.lookup[lab.clamp(min=0)] >= 0)).all(1)
        keep = [k for k in range(len(pairs)) if bool(ok[k])]
    if not keep:
        raise TrainingError("generated: every answer uses tokens outside the output vocabulary")
    sub = encode_pairs(task.tokenizer, [pairs[k] for k in keep], max_length=task.max_length)
    start = split_layer(model)
    qa_task = TwinTask(
        tokenizer=task.tokenizer, dataset=task.dataset, node_ids=[p for p, _ in pairs], row_of={},
        gold=[frozenset()] * len(keep), encoded=sub, vocab=task.vocab,
        frozen=frozen_states(model, sub, start, inside=task.frozen is None or task.frozen.inside,
                             batch_size=config.eval_batch_size, compute_dtype=task.compute_dtype, progress=progress),
        max_length=task.max_length, compute_dtype=task.compute_dtype,
    )
    rows = torch.arange(len(keep))
    loss = float("nan")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        optimizer = make_optimizer(model.parameters(), config.optimizer, config.learning_rate)
        gen = torch.Generator().manual_seed(int(seed))
        for _ in range(n_epochs):
            loss = _train_pass(model, qa_task, _pass_rows(rows, config.shuffle_passes, gen), optimizer,
                               config.batch_size, "cached")
    return {"pairs": float(len(pairs)), "skipped": float(len(pairs) - len(keep)), "loss": loss}


# ---------------------------------------------------------------------------
# Pipelines shared by the Fig. 6 / Fig. 7 notebooks and the benchmark
# ---------------------------------------------------------------------------


def training_instances(dataset: DataSet, config: TrainingConfig) -> list[Instance]:
    """The training split in log order, cut to the first ``config.train_limit`` instances (0 = all)."""
    train = sorted(dataset.split("train"), key=lambda i: i.index)
    if not train:
        raise TrainingError("dataset: the training split is empty; nothing to train on")
    return train[: config.train_limit] if config.train_limit else train


def run_seeds(config: TrainingConfig) -> list[int]:
    """``train_seed, train_seed + 1, ...`` (``n_seeds`` of them)."""
    return list(range(config.train_seed, config.train_seed + config.n_seeds))


def setup_twin(settings, *, device: str = "auto", progress: bool = False):
    """Backbone + Twin Adapters + data set + prepared task, all from :class:`gentwin.config.Settings`.

    Returns ``(model, tokenizer, dataset, task)``; the backbone is
    ``settings.training.backbone`` loaded by :func:`gentwin.llm.load_backbone`
    on ``device`` (CUDA when present for ``"auto"``).
    """
    from .adapter import TwinAdapterConfig, add_twin_adapters
    from .config import select_device
    from .llm import load_backbone
    from .topology import generate_dataset

    cfg = settings.training
    dataset = generate_dataset(settings.topology)
    model, tok = load_backbone(cfg.backbone, device=select_device(device))
    add_twin_adapters(model, TwinAdapterConfig.from_settings(settings, seed=cfg.train_seed))
    task = prepare_task(model, tok, dataset, max_length=cfg.max_length, restrict_vocab=cfg.restrict_vocab,
                        compute_dtype=cfg.compute_dtype, batch_size=cfg.eval_batch_size, progress=progress)
    return model, tok, dataset, task


def _order(settings, dataset: DataSet, instances: list[Instance], by: str, seed: int) -> list[Instance]:
    from .pooling import training_order

    p = settings.pooling
    return training_order(dataset, instances, by=by, seed=seed, band=p.band, pool_weight=p.pool_weight,
                          alpha_reading=p.alpha_reading, relation_count=p.relation_count)


def fig7_runs(model, task: TwinTask, settings, *, progress: bool = False):
    """Fig. 7: ``epochs`` epochs per seed, per-epoch metrics on training and validation, final greedy decoding.

    Every seed restarts the adapters (:func:`reset_adapters`) and orders the
    training instances by ``settings.pooling.order`` with that seed.
    Returns ``(history, final)``: ``history`` is :func:`train_twin`'s table for
    all seeds; ``final`` has one row per seed and split with the scores of
    greedy decoding after the last epoch (and after the question/answer pass
    when ``qa_feedback`` is on, as ``stage = "qa"``).
    """
    import pandas as pd
    from tqdm import tqdm

    cfg = settings.training
    train = training_instances(task.dataset, cfg)
    histories, finals = [], []
    for seed in tqdm(run_seeds(cfg), desc="seeds", disable=not progress, leave=False):
        reset_adapters(model, seed)
        order = _order(settings, task.dataset, train, settings.pooling.order, seed)
        t0 = time.perf_counter()
        hist = train_twin(model, task, order, cfg, seed=seed, progress=progress)
        hist["wall_s"] = time.perf_counter() - t0
        histories.append(hist)
        rows = task.rows(order)
        stages = [("trained", None)]
        if cfg.qa_feedback:
            stages.append(("qa", lambda: qa_feedback(model, task, extract_graph(model, task), cfg, seed=seed)))
        for stage, action in stages:
            if action is not None:
                action()
            for split in ("train", "validation"):
                sc = evaluate(model, task, _eval_rows(task, rows, split), mode="generate", l1_index=cfg.l1_index,
                              batch_size=cfg.eval_batch_size)
                finals.append(dict(seed=seed, split=split, stage=stage, **sc))
    return pd.concat(histories, ignore_index=True), pd.DataFrame(finals)


def fig6_runs(model, task: TwinTask, settings, *, progress: bool = False):
    """Fig. 6: :func:`extraction_curve` for every order in ``fig6_orders`` and every seed.

    Returns one table with columns ``order, seed, round, extracted, ...``.
    The frozen part of ``task`` is shared by all runs.
    """
    import pandas as pd
    from tqdm import tqdm

    cfg = settings.training
    train = training_instances(task.dataset, cfg)
    curves = []
    runs = [(by, seed) for seed in run_seeds(cfg) for by in cfg.fig6_orders]
    for by, seed in tqdm(runs, desc="order x seed", disable=not progress, leave=False):
        reset_adapters(model, seed)
        order = _order(settings, task.dataset, train, by, seed)
        curve = extraction_curve(model, task, order, cfg, seed=seed, progress=progress)
        curve.insert(0, "order", by)
        curves.append(curve)
    return pd.concat(curves, ignore_index=True)


def fig6_gains(curves, baseline: str = "random"):
    """Per-seed :func:`pooling_gain` of every order in ``curves`` against ``baseline`` (same seed).

    ``curves`` is :func:`fig6_runs`' table.  Returns columns ``order, seed,
    gain_pct`` (NaN where the baseline extracted nothing in any round, so the
    gain is undefined).

    >>> import pandas as pd
    >>> c = pd.DataFrame({"order": ["priority"] * 2 + ["random"] * 2, "seed": 0, "round": [1, 2, 1, 2],
    ...                   "extracted": [12, 24, 10, 20]})
    >>> fig6_gains(c).to_dict("records")
    [{'order': 'priority', 'seed': 0, 'gain_pct': 20.0}]
    """
    import pandas as pd

    if baseline not in set(curves["order"]):
        raise TrainingError(f"baseline = {baseline!r}: not among the orders {sorted(set(curves['order']))}")
    rows = []
    for (order, seed), sub in curves.groupby(["order", "seed"], sort=False):
        if order == baseline:
            continue
        base = curves[(curves["order"] == baseline) & (curves["seed"] == seed)].sort_values("round")
        mine = sub.sort_values("round")
        if base.empty or base["round"].tolist() != mine["round"].tolist():
            raise TrainingError(f"curves: seed {seed} has no matching {baseline!r} curve over the same rounds")
        try:
            gain = pooling_gain(mine["extracted"].to_numpy(), base["extracted"].to_numpy())
        except TrainingError:
            gain = float("nan")
        rows.append({"order": order, "seed": int(seed), "gain_pct": gain})
    return pd.DataFrame(rows, columns=["order", "seed", "gain_pct"])
