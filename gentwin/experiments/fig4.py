"""Fig. 4 and the retrieval measure of the prompting chapter: the twin around a question, and recall@k of R."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import networkx as nx
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from ..checks import check_int
from ..graph import LABELS, Subgraph, TwinRequirement
from ..metrics import compare_graph, recall_at_k
from ..prompting import Fact, PromptingError, Retriever, compare_twins, facts_from_subgraph, generated_twin
from ..topology import DataSet, Relation
from ..training import extract_graph, reset_adapters, train_twin
from .pipeline import setup_twin, stream_order, training_instances

__all__ = ["RETRIEVAL_MODES", "KIND_COLOURS", "RELATION_COLOURS", "READ_OUT_TEXT", "Question", "generate_questions",
           "evaluate_retrieval", "recall_by_mode", "recall_glues", "category_neighbourhood", "draw_neighbourhood",
           "draw_facts", "GeneratedTwinAnswers", "answer_from_generated_twin"]

# each retrieval variant's (entity filter, relation filter)
_FILTERS = {"embedding": (False, False), "entity filter + embedding": (True, False),
            "entity + relation filter + embedding": (True, True)}
#: Retrieval variants compared by :func:`evaluate_retrieval`.
RETRIEVAL_MODES: tuple[str, ...] = tuple(_FILTERS)


@dataclass(frozen=True)
class Question:
    """A generated question, the facts that answer it (gold) and its template."""

    text: str
    gold: frozenset[Fact]
    template: str


_TEMPLATES = ("what_is_category", "gateway_of", "service_of", "measures", "is_active", "sensor_count")


def generate_questions(facts: Sequence[Fact], n: int, seed: int) -> list[Question]:
    """``n`` questions about a twin, each with its gold facts, the templates used in turn (phrased differently
    from the fact sentences on purpose); subjects are drawn with ``numpy.random.default_rng(seed)``."""
    check_int("n", n, low=1, error=PromptingError)
    rng = np.random.default_rng(seed)
    by_rel: dict[str, list[Fact]] = {}
    cat_facts: dict[str, list[Fact]] = {}
    for f in facts:
        if f.kind == "category":
            cat_facts.setdefault(f.subject, []).append(f)
        else:
            by_rel.setdefault(f.relation, []).append(f)
    sensor_ids = {f.subject for f in facts if f.kind == "attribute" and f.relation == "category"}

    def one(relation: str, text: str, subjects=None):
        pool = [f for f in by_rel.get(relation, []) if subjects is None or f.subject in subjects]
        return pool, lambda f: (text.format(f.subject), frozenset([f]))

    makers: dict[str, tuple[list, Callable[[Any], tuple[str, frozenset[Fact]]]]] = {
        "what_is_category": (sorted(cat_facts), lambda c: (f"What is a {c}?", frozenset(cat_facts[c]))),
        "gateway_of": one("CONNECTED_TO", "Which gateway does {} send its data through?", sensor_ids),
        "service_of": one("SERVES_IN", "Which smart-city service is {} part of?"),
        "measures": one("controlled_property", "What quantity does {} sense?"),
        "is_active": one("active", "Is {} currently reporting?"),
        "sensor_count": one("n_sensors", "How many sensors use {}?"),
    }
    usable = [t for t in _TEMPLATES if makers[t][0]]
    if not usable:
        raise PromptingError("facts: no template has a subject (the twin holds no sensors or gateways)")
    out = []
    for j in range(n):
        t = usable[j % len(usable)]
        pool, make = makers[t]
        text, gold = make(pool[int(rng.integers(0, len(pool)))])
        out.append(Question(text, gold, t))
    return out


def category_neighbourhood(store, whole: Subgraph, category: str = "PM2.5 sensor"):
    """Fig. 4's knowledge graph: the one-hop neighbourhood of the first gateway that serves a ``category`` sensor
    (the first gateway when none does), requested from ``store``.  Returns the gateway's id, the answered
    :class:`~gentwin.graph.Subgraph` and a networkx graph of it with its service's ``IN`` link to the city."""
    sensors = sorted((n for n in whole.nodes.values() if n.kind == "sensor" and n.get("category") == category),
                     key=lambda n: n.id)
    if sensors:
        seed = sensors[0].get("gateway")
    else:
        seed = sorted(n.id for n in whole.nodes.values() if n.kind == "gateway")[0]
    part = store.request(TwinRequirement(seeds=(seed,), hops=1))
    service = [n.get("service") for n in part.nodes.values() if n.kind == "gateway"][0]
    g = part.to_networkx()
    g.add_edge(service, "CITY", key="IN", type="IN")
    g.nodes["CITY"].update(kind="city", label="SmartCity")
    return seed, part, g


#: Fig. 4's colours: entities by kind, relations by type.
KIND_COLOURS = {"sensor": "#4c72b0", "gateway": "#dd8452", "service": "#55a868", "city": "#8172b3"}
RELATION_COLOURS = {"CONNECTED_TO": "0.3", "SERVES_IN": "#55a868", "IN": "#8172b3"}


def draw_neighbourhood(g, ax: Any, title: str) -> None:
    """Fig. 4, first panel: :func:`category_neighbourhood`'s graph, entities coloured by kind (sensors labelled
    with their category), relations by type, in a seeded spring layout."""
    nx.draw_networkx(g, nx.spring_layout(nx.Graph(g), seed=3), ax=ax, node_size=650, font_size=7, arrowsize=12,
                     node_color=[KIND_COLOURS[g.nodes[n].get("kind", "city")] for n in g.nodes],
                     edge_color=[RELATION_COLOURS[k] for _, _, k in g.edges(keys=True)],
                     connectionstyle="arc3,rad=0.08",
                     labels={n: n + ("\n" + g.nodes[n]["category"] if g.nodes[n].get("category") else "")
                             for n in g.nodes})
    handles = [Line2D([], [], marker="o", ls="", color=KIND_COLOURS[k], label=LABELS[k]) for k in KIND_COLOURS]
    handles += [Line2D([], [], color=c, label=t) for t, c in RELATION_COLOURS.items()]
    ax.legend(handles=handles, loc="upper left", fontsize=8, frameon=False)
    ax.set_title(title)
    ax.axis("off")


def draw_facts(sub, ax: Any, title: str) -> None:
    """Fig. 4, second panel: retrieved facts (:meth:`gentwin.prompting.Answer.subgraph`) as edges labelled with
    their relation, in a shell layout."""
    pos = nx.shell_layout(nx.Graph(sub))
    nx.draw_networkx(sub, pos, ax=ax, node_color="#dde6f0", node_size=1800, font_size=8,
                     connectionstyle="arc3,rad=0.05")
    nx.draw_networkx_edge_labels(sub, pos, ax=ax, font_size=7,
                                 edge_labels={(u, v): k for u, v, k in sub.edges(keys=True)})
    ax.set_title(title)
    ax.axis("off")


def recall_by_mode(recall):
    """Mean recall@k of :func:`evaluate_retrieval`'s rows per retrieval mode (rows, in :data:`RETRIEVAL_MODES`
    order) and k (columns)."""
    modes = [m for m in RETRIEVAL_MODES if m in set(recall["mode"])]
    return recall.groupby(["mode", "k"])["recall"].mean().unstack("k").reindex(modes)


def recall_glues(overall, top_k: int) -> dict[str, Any]:
    """The chapter's glued recall@``top_k`` with both filters and with embeddings alone, and ``top_k``."""
    return {"prompting_recall_full": float(overall.loc[RETRIEVAL_MODES[2], top_k]),
            "prompting_recall_embedding": float(overall.loc[RETRIEVAL_MODES[0], top_k]),
            "prompting_top_k": top_k}


def evaluate_retrieval(retriever: Retriever, questions: Sequence[Question], ks: Sequence[int] | int,
                       modes: Sequence[str] = RETRIEVAL_MODES):
    """Recall@k of each retrieval mode: one row per question, mode and k (mode, k, template, question, recall,
    n_gold); the questions are embedded once and shared by the modes."""
    ks = (ks,) if isinstance(ks, int) else tuple(ks)
    for k in ks:
        check_int("ks: k", k, low=1, error=PromptingError)
    for mode in modes:
        if mode not in _FILTERS:
            raise PromptingError(f"modes: {mode!r} is not one of {', '.join(map(repr, _FILTERS))}")
    if not questions:
        raise PromptingError("questions: need at least one question")
    vectors = retriever.encode_questions([q.text for q in questions])
    rows = []
    for mode in modes:
        r = retriever.with_filters(entity_filter=_FILTERS[mode][0], relation_filter=_FILTERS[mode][1])
        for q, vec in zip(questions, vectors):
            got = [s.fact for s in r.retrieve(q.text, max(ks), query_vector=vec)]
            rows += [{"mode": mode, "k": k, "template": q.template, "question": q.text,
                      "recall": recall_at_k(got, q.gold, k), "n_gold": len(q.gold)} for k in ks]
    return pd.DataFrame(rows)


#: How the chapter names each ``final_eval_mode`` (how the trained adapter writes its graph).
READ_OUT_TEXT = {"generate": "greedy decoding", "teacher_forced": "the teacher-forced read-out"}

#: Rows of the scores table (:func:`gentwin.prompting.compare_twins`) and the glue-name tag of each.
_SCORE_ROWS = (("true graph", "_true"), ("generated graph", ""), ("generated graph − true graph", "_gap"))


@dataclass(frozen=True)
class GeneratedTwinAnswers:
    """What :func:`answer_from_generated_twin` found: the answers per question and their scores for both twins,
    the generated relations against the true ones, and what the run took."""

    per_question: Any  #: :func:`gentwin.prompting.compare_twins`' per-question table (column ``graph``)
    scores: Any  #: its scores table: true graph, generated graph and their paired difference
    relations: dict[str, float]  #: :func:`gentwin.metrics.compare_graph` of the generated relations
    dropped: list[Relation]  #: generated relations the twin cannot hold (:func:`gentwin.prompting.generated_twin`)
    n_instances: int  #: training instances of one epoch
    epochs: int
    read_out: str  #: ``final_eval_mode``
    seconds: float  #: set-up, training, read-out and answering

    def summary(self) -> str:
        """One sentence: what was trained, what the model wrote, and how long it took."""
        rel = self.relations
        return (f"{self.n_instances} training instances, {self.epochs} epochs; the model wrote {rel['produced']} "
                f"relations, {rel['correct']} of the {rel['true']} true ones (precision {rel['precision']:.2f}, "
                f"recall {rel['recall']:.2f}); {len(self.dropped)} could not be stored. Training, read-out and "
                f"answering took {self.seconds:.0f} s.")

    def glues(self) -> dict[str, Any]:
        """The chapter's ``prompting_generated_*`` values: epochs, read-out, seconds, relation recall and precision,
        and per twin (``_true``, none for the generated one, ``_gap``) the share correct and recall@k with
        ``_low`` and ``_high``."""
        out = {"epochs": self.epochs, "mode": READ_OUT_TEXT[self.read_out], "seconds": self.seconds,
               "relation_recall": self.relations["recall"], "relation_precision": self.relations["precision"]}
        out.update({f"{m}{tag}{stat}": float(self.scores.loc[row, m + stat]) for row, tag in _SCORE_ROWS
                    for m in ("correct", "recall") for stat in ("", "_low", "_high")})
        return {f"prompting_generated_{name}": value for name, value in out.items()}


def answer_from_generated_twin(settings, dataset: DataSet, store, whole: Subgraph, retriever: Retriever,
                               questions: Sequence[Question], *, step_cache=None) -> GeneratedTwinAnswers:
    """Eq. (10) on the twin a Twin Adapter generated (Algorithm 1 line 11), beside the true twin ``whole``.

    Trains ``demo_epochs`` epochs in Priority Pooling order, writes the twin read out with ``final_eval_mode`` to
    ``store`` and answers ``questions`` from both twins with the top ``top_k`` facts.
    """
    t0 = time.perf_counter()
    cfg, tw = settings.training, settings.twin
    model, _, dataset, task = setup_twin(settings, dataset=dataset, step_cache=step_cache)
    reset_adapters(model, cfg.train_seed)
    order = stream_order(settings, dataset, training_instances(dataset, cfg), "priority", cfg.train_seed)
    train_twin(model, task, order, cfg, seed=cfg.train_seed, epochs=cfg.demo_epochs, eval_splits=(),
               step_cache=step_cache)
    generated = extract_graph(model, task, mode=cfg.final_eval_mode)
    nodes, relations, dropped = generated_twin(whole, generated)
    store.rebuild(nodes.values(), relations, name="generated")
    ours = Retriever(facts_from_subgraph(store.request()), retriever.embedder)
    per_question, scores = compare_twins({"true graph": retriever, "generated graph": ours}, questions, tw.top_k,
                                         confidence=settings.stats.confidence, seed=tw.twin_seed)
    return GeneratedTwinAnswers(per_question, scores, compare_graph(generated, dataset.topology), dropped,
                                len(order), cfg.demo_epochs, cfg.final_eval_mode, time.perf_counter() - t0)
