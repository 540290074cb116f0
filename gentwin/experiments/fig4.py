"""Fig. 4 and the retrieval measure of the prompting chapter: the twin around a question, and recall@k of R.

:func:`category_neighbourhood` is the knowledge graph Fig. 4 draws;
:func:`generate_questions` makes a question set with known gold facts from the
twin itself, and :func:`evaluate_retrieval` measures, for each retrieval mode,
how many gold facts the retriever R of eq. (10) returns in its top k
(:func:`gentwin.metrics.recall_at_k`); :func:`recall_by_mode` summarises it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ..checks import check_int
from ..graph import Subgraph, TwinRequirement
from ..metrics import recall_at_k
from ..prompting import Fact, PromptingError, Retriever

__all__ = ["RETRIEVAL_MODES", "Question", "generate_questions", "evaluate_retrieval", "recall_by_mode",
           "category_neighbourhood"]

#: Retrieval variants compared by :func:`evaluate_retrieval`.
RETRIEVAL_MODES: tuple[str, ...] = ("embedding", "entity filter + embedding", "entity + relation filter + embedding")


@dataclass(frozen=True)
class Question:
    """A generated question, the facts that answer it (gold) and its template."""

    text: str
    gold: frozenset[Fact]
    template: str


_TEMPLATES = ("what_is_category", "gateway_of", "service_of", "measures", "is_active", "sensor_count")


def generate_questions(facts: Sequence[Fact], n: int, seed: int) -> list[Question]:
    """``n`` questions about a twin, each with its gold facts, templates used in turn.

    Templates (phrased differently from the fact sentences on purpose):
    "What is a {category}?" (gold: that category's facts), "Which gateway does
    {sensor} send its data through?", "Which smart-city service is {device}
    part of?", "What quantity does {sensor} sense?", "Is {device} currently
    reporting?", "How many sensors use {gateway}?".  Subjects are drawn with
    ``numpy.random.default_rng(seed)``.
    """
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
    makers: dict[str, tuple[list, Callable[[Any], tuple[str, frozenset[Fact]]]]] = {
        "what_is_category": (sorted(cat_facts), lambda c: (f"What is a {c}?", frozenset(cat_facts[c]))),
        "gateway_of": ([f for f in by_rel.get("CONNECTED_TO", []) if f.subject in sensor_ids],
                       lambda f: (f"Which gateway does {f.subject} send its data through?", frozenset([f]))),
        "service_of": (by_rel.get("SERVES_IN", []), lambda f: (f"Which smart-city service is {f.subject} part of?", frozenset([f]))),
        "measures": (by_rel.get("controlled_property", []),
                     lambda f: (f"What quantity does {f.subject} sense?", frozenset([f]))),
        "is_active": (by_rel.get("active", []), lambda f: (f"Is {f.subject} currently reporting?", frozenset([f]))),
        "sensor_count": (by_rel.get("n_sensors", []), lambda f: (f"How many sensors use {f.subject}?", frozenset([f]))),
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
    """Fig. 4's knowledge graph: the one-hop neighbourhood of the first gateway that serves a ``category`` sensor.

    A version request to ``store`` with that gateway as seed (the first gateway
    of the twin when no sensor is of ``category``).  Returns the gateway's id,
    the answered :class:`~gentwin.graph.Subgraph` and a networkx graph of it
    with its service's ``IN`` link to the city added for context.
    """
    sensors = sorted((n for n in whole.nodes.values() if n.kind == "sensor" and n.get("category") == category),
                     key=lambda n: n.id)
    seed = sensors[0].get("gateway") if sensors else sorted(n.id for n in whole.nodes.values() if n.kind == "gateway")[0]
    part = store.request(TwinRequirement(seeds=(seed,), hops=1))
    service = [n.get("service") for n in part.nodes.values() if n.kind == "gateway"][0]
    g = part.to_networkx()
    g.add_edge(service, "CITY", key="IN", type="IN")
    g.nodes["CITY"].update(kind="city", label="SmartCity")
    return seed, part, g


def recall_by_mode(recall):
    """Mean recall@k per retrieval mode (rows, in :data:`RETRIEVAL_MODES` order) and k (columns).

    ``recall`` is the frame of :func:`evaluate_retrieval`.
    """
    modes = [m for m in RETRIEVAL_MODES if m in set(recall["mode"])]
    return recall.groupby(["mode", "k"])["recall"].mean().unstack("k").reindex(modes)


def evaluate_retrieval(retriever: Retriever, questions: Sequence[Question], ks: Sequence[int] | int,
                       modes: Sequence[str] = RETRIEVAL_MODES):
    """Recall@k of each retrieval mode on a question set: one row per question, mode and k (a DataFrame).

    Columns: mode, k, template, question, recall, n_gold.  Questions are
    embedded once, in one batch, and shared by the modes.
    """
    import pandas as pd

    settings = dict(zip(RETRIEVAL_MODES, ((False, False), (True, False), (True, True))))
    ks = (ks,) if isinstance(ks, int) else tuple(ks)
    for k in ks:
        check_int("ks: k", k, low=1, error=PromptingError)
    for mode in modes:
        if mode not in settings:
            raise PromptingError(f"modes: {mode!r} is not one of {', '.join(map(repr, settings))}")
    if not questions:
        raise PromptingError("questions: need at least one question")
    vectors = retriever.encode_questions([q.text for q in questions])
    rows = []
    for mode in modes:
        r = retriever.with_filters(entity_filter=settings[mode][0], relation_filter=settings[mode][1])
        for q, vec in zip(questions, vectors):
            got = [s.fact for s in r.retrieve(q.text, max(ks), query_vector=vec)]
            for k in ks:
                rows.append({"mode": mode, "k": k, "template": q.template, "question": q.text,
                             "recall": recall_at_k(got, q.gold, k), "n_gold": len(q.gold)})
    return pd.DataFrame(rows)
