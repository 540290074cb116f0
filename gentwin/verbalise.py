r"""Verbalising the topology for the LLM: eq. (2) prompts, triple targets, their tokens and the output vocabulary.

The twin-modelling task verbalises a device node's key-value pair ``(k, v)`` of eq. (2) as a *prompt* and
asks the model to continue it with the relations the node is the head of, in one fixed text form::

    [:s] {AQ-S017, AQ-GW03} ->  (AQ-S017, CONNECTED_TO, AQ-GW03); (AQ-S017, SERVES_IN, AQ)<eos>
    [:gw] {AQ-GW03, 5} ->  (AQ-GW03, CONNECTED_TO, AQ-GW07); (AQ-GW03, SERVES_IN, AQ)<eos>

:func:`output_vocabulary` collects the token ids the targets use, so the head can be restricted to them
(the kept logits are the full head's; the softmax normaliser and what decoding may emit change).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence

from .topology import DataSet, Instance, Relation, Topology, TopologyError

__all__ = [
    "VerbaliseError", "IGNORE", "TRIPLE_SEPARATOR", "ID_STYLES", "node_prompt", "node_facts", "opaque_names",
    "rename", "prompt_names", "relation_copyable", "facts_text", "verbalise", "parse_triples", "qa_pairs",
    "Encoded", "encode_pairs", "OutputVocab", "output_vocabulary",
]

#: Label of a token that is not scored (Hugging Face convention).
IGNORE = -100
#: Between two triples of a target.
TRIPLE_SEPARATOR = "; "
_TRIPLE_RE = re.compile(r"\(\s*([^(),;\s]+)\s*,\s*([A-Za-z_]+)\s*,\s*([^(),;\s]+)\s*\)")


class VerbaliseError(ValueError):
    """Bad input to the verbalisation or tokenisation (the message names the argument and value)."""


#: How node ids appear in prompts and targets: as in the data set, or as seeded opaque tokens (:func:`opaque_names`).
ID_STYLES = ("named", "opaque")


def opaque_names(node_ids: Iterable[str], seed: int) -> dict[str, str]:
    """A seeded relabelling of node ids to distinct opaque tokens ``N`` + four digits, which carry no type,
    service or parent (so a relation is copyable from a prompt only when the prompt names its tail).

    >>> names = opaque_names(["AQ", "AQ-GW01", "AQ-S001"], seed=0)
    >>> sorted(names) == ["AQ", "AQ-GW01", "AQ-S001"], len(set(names.values())), all(
    ...     v[0] == "N" and v[1:].isdigit() and len(v) == 5 for v in names.values())
    (True, 3, True)
    >>> names == opaque_names(["AQ-S001", "AQ", "AQ-GW01"], seed=0), names == opaque_names(names, seed=1)
    (True, False)
    """
    ids = sorted(set(node_ids))
    if len(ids) > 9000:
        raise VerbaliseError(f"node_ids: {len(ids)} nodes; opaque names cover at most 9000")
    codes = np.random.default_rng(int(seed)).choice(9000, size=len(ids), replace=False) + 1000
    return {k: f"N{int(c)}" for k, c in zip(ids, codes)}


def rename(relations: Iterable[Relation], names: Mapping[str, str] | None) -> list[Relation]:
    """``relations`` with head and tail replaced through ``names`` (ids not in it stay; None = no change).

    >>> rename([Relation("a", "IN", "b")], {"a": "N1000"})
    [Relation(head='N1000', type='IN', tail='b')]
    """
    if names is None:
        return list(relations)
    return [Relation(names.get(r.head, r.head), r.type, names.get(r.tail, r.tail)) for r in relations]


def prompt_names(prompt: str) -> set[str]:
    """Every name a prompt spells: the ids between its braces and each id's ``-``-separated prefixes.

    >>> sorted(prompt_names("[:s] {AQ-S017, AQ-GW03} ->"))
    ['AQ', 'AQ-GW03', 'AQ-S017']
    >>> sorted(prompt_names("[:gw] {N4821, 5} ->"))
    ['5', 'N4821']
    """
    inside = prompt[prompt.find("{") + 1: prompt.rfind("}")] if "{" in prompt else ""
    names: set[str] = set()
    for item in (x.strip() for x in inside.split(",")):
        parts = item.split("-")
        names.update("-".join(parts[: k + 1]) for k in range(len(parts)) if item)
    return names


def relation_copyable(relation: Relation, prompt: str) -> bool:
    """Whether ``relation`` (as spelled in the target) can be read off ``prompt``: the prompt names both its
    head and its tail (:func:`prompt_names`); anything else must be inferred from what was learnt.

    >>> p = "[:gw] {AQ-GW03, 5} ->"
    >>> relation_copyable(Relation("AQ-GW03", "SERVES_IN", "AQ"), p), relation_copyable(
    ...     Relation("AQ-GW03", "CONNECTED_TO", "AQ-GW07"), p)
    (True, False)
    >>> relation_copyable(Relation("N4821", "SERVES_IN", "N1203"), "[:gw] {N4821, 5} ->")
    False
    """
    names = prompt_names(prompt)
    return relation.head in names and relation.tail in names


def node_prompt(topology: Topology, node_id: str, degree: int | None = None,
                names: Mapping[str, str] | None = None) -> str:
    """The (k, v) pair of eq. (2) for one device node, as prompt text: ``[:s] {sensor id, gateway id} ->`` or
    ``[:gw] {gateway id, d_i} ->`` (``d_i`` connected sensors), ids spelled through ``names``.  The presence of
    eq. (1) changes a node's priority, not its facts, so it is not part of the prompt.

    >>> from gentwin.config import TopologyConfig
    >>> from gentwin.topology import generate_topology
    >>> topo = generate_topology(TopologyConfig(n_gateways=6, n_sensors=24, n_gateway_links=3, n_instances=60))
    >>> gateway = topo.nodes["AQ-S001"].gateway  # the sensor's gateway g_{s_i}
    >>> node_prompt(topo, "AQ-S001") == "[:s] {AQ-S001, " + gateway + "} ->"
    True
    >>> node_prompt(topo, "AQ-GW01", degree=5)
    '[:gw] {AQ-GW01, 5} ->'
    >>> node_prompt(topo, "AQ")
    Traceback (most recent call last):
    ...
    gentwin.verbalise.VerbaliseError: node_id = 'AQ': a service node has no (k, v) pair (eq. 2 covers sensors and gateways)
    """
    node = topology.nodes.get(node_id)
    if node is None:
        raise VerbaliseError(f"node_id = {node_id!r}: not a node of the topology")
    name = (lambda x: x) if names is None else (lambda x: names.get(x, x))
    if node.kind == "sensor":
        return f"[:s] {{{name(node.id)}, {name(node.gateway)}}} ->"
    if node.kind == "gateway":
        d = topology.sensor_count(node.id) if degree is None else degree
        return f"[:gw] {{{name(node.id)}, {d}}} ->"
    raise VerbaliseError(f"node_id = {node_id!r}: a {node.kind} node has no (k, v) pair "
                         "(eq. 2 covers sensors and gateways)")


def node_facts(topology: Topology, node_id: str) -> list[Relation]:
    """The relations ``node_id`` is the head of, sorted (head, type, tail)."""
    if node_id not in topology.nodes:
        raise VerbaliseError(f"node_id = {node_id!r}: not a node of the topology")
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
    >>> prompt, target = verbalise(ds, inst)
    >>> prompt.startswith("[:s] {AQ-S001, "), parse_triples(target) == node_facts(ds.topology, "AQ-S001")
    (True, True)
    >>> [r.type for r in parse_triples(target)]  # a sensor's facts: its gateway and its service
    ['CONNECTED_TO', 'SERVES_IN']
    """
    if not isinstance(instance, Instance):
        raise VerbaliseError(f"instance = {instance!r}: must be a gentwin.topology.Instance")
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


_QUESTIONS = {
    "CONNECTED_TO": "Q: What is {head} connected to? A:",
    "SERVES_IN": "Q: Which service does {head} serve in? A:",
    "IN": "Q: Where is {head}? A:",
}


def qa_pairs(relations: Iterable[Relation]) -> list[tuple[str, str]]:
    """Algorithm 1 line 14: question/answer prompts from triples, one per (head, relation type); the answer
    lists the tails, sorted, joined by ``", "``.

    >>> qa_pairs([Relation("AQ-S017", "CONNECTED_TO", "AQ-GW03"), Relation("AQ-S017", "SERVES_IN", "AQ")])
    [('Q: What is AQ-S017 connected to? A:', 'AQ-GW03'), ('Q: Which service does AQ-S017 serve in? A:', 'AQ')]
    """
    grouped: dict[tuple[str, str], list[str]] = {}
    for rel in relations:
        grouped.setdefault((rel.head, rel.type), []).append(rel.tail)
    return [(_QUESTIONS[typ].format(head=head), ", ".join(sorted(tails)))
            for (head, typ), tails in sorted(grouped.items())]


@dataclass(frozen=True)
class Encoded:
    """Right-padded token sequences ``prompt + " " + target + <eos>``.

    ``labels`` (aligned with ``input_ids``, Hugging Face convention) is ``-100`` on the prompt and padding;
    ``spans`` holds per sequence the token range ``[start, end)`` of each triple with its separator.
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
    """Tokenise (prompt, target) pairs with the loss on the target tokens only.

    Each target piece (``" " + triple``, plus ``";"`` before the next) is tokenised on its own, so every
    triple owns a known token range; the only special token is one end-of-sequence after the target.
    """
    if len(pairs) == 0:
        raise VerbaliseError("pairs = []: nothing to encode")
    eos = tokenizer.eos_token_id
    if eos is None:
        raise VerbaliseError(f"tokenizer = {type(tokenizer).__name__}: has no end-of-sequence token")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    rows, prompt_lens, spans = [], [], []
    for prompt, target in pairs:
        if not target:
            raise VerbaliseError(f"target = {target!r} for prompt {prompt!r}: must not be empty")
        ids = list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        p_len = len(ids)
        sp = []
        for piece in _pieces(target):
            pids = tokenizer(piece, add_special_tokens=False)["input_ids"]
            sp.append((len(ids), len(ids) + len(pids)))
            ids.extend(pids)
        ids.append(eos)
        if len(ids) > max_length:
            raise VerbaliseError(f"max_length = {max_length}: the sequence for prompt {prompt!r} needs {len(ids)} "
                                 "tokens; raise max_length")
        rows.append(ids)
        prompt_lens.append(p_len)
        spans.append(tuple(sp))

    def padded(seqs: list[list[int]], value: int) -> torch.Tensor:
        return pad_sequence([torch.tensor(x, dtype=torch.long) for x in seqs], batch_first=True, padding_value=value)

    return Encoded(
        input_ids=padded(rows, pad), attention_mask=padded([[1] * len(r) for r in rows], 0),
        labels=padded([[IGNORE] * p + r[p:] for r, p in zip(rows, prompt_lens)], IGNORE),
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
            raise VerbaliseError(f"labels: token ids {bad} are not in the restricted output vocabulary")
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
        raise VerbaliseError(f"vocab_size = {vocab_size}: the data use token id {int(ids.max())}")
    lookup = torch.full((vocab_size,), -1, dtype=torch.long)
    lookup[ids] = torch.arange(len(ids))
    return OutputVocab(ids=ids, lookup=lookup)
