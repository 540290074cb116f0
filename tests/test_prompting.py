"""Tests of gentwin.prompting: facts, the retriever R, the verbaliser g and recall@k (eq. 10)."""

from __future__ import annotations

import numpy as np
import pytest

from gentwin.config import resolve
from gentwin.experiments import fig4
from gentwin.experiments.fig4 import (
    RETRIEVAL_MODES,
    Question,
    category_neighbourhood,
    evaluate_retrieval,
    generate_questions,
    recall_by_mode,
    recall_glues,
)
from gentwin.graph import NetworkxStore, Subgraph, TwinNode, twin_from_topology
from gentwin.prompting import (
    Fact,
    LLMVerbaliser,
    MiniLMEmbedder,
    PromptingError,
    Retriever,
    TemplateVerbaliser,
    answer,
    build_prompt,
    compare_twins,
    detect_relations,
    facts_from_subgraph,
    generated_twin,
    score_answers,
)
from gentwin.metrics import recall_at_k
from gentwin.topology import Relation, generate_dataset

R = Relation


def toy_subgraph() -> Subgraph:
    nodes = {
        "CITY": TwinNode("CITY", "city", {"name": "smart city"}),
        "AQ": TwinNode("AQ", "service", {"name": "air quality"}),
        "GW1": TwinNode("GW1", "gateway", {"service": "AQ", "n_sensors": 2, "active": True, "latitude": 1.0}),
        "S1": TwinNode("S1", "sensor", {"category": "PM2.5 sensor", "controlled_property": "pm25",
                                        "sdm_type": "AirQualityObserved", "service": "AQ", "active": True}),
        "S2": TwinNode("S2", "sensor", {"category": "PM2.5 sensor", "controlled_property": "pm25",
                                        "sdm_type": "AirQualityObserved", "service": "AQ", "active": False}),
    }
    rels = frozenset({R("AQ", "IN", "CITY"), R("GW1", "SERVES_IN", "AQ"), R("S1", "CONNECTED_TO", "GW1"),
                      R("S2", "CONNECTED_TO", "GW1"), R("S1", "SERVES_IN", "AQ"), R("S2", "SERVES_IN", "AQ")})
    return Subgraph(1, nodes, rels)


class BagOfWords:
    """A transparent embedder for unit tests: normalised counts of a fixed vocabulary."""

    vocab = ("gateway", "connected", "pm25", "measures", "active", "service", "serves", "sensors")

    def __init__(self):
        self.calls = 0

    def encode(self, texts):
        self.calls += 1
        v = np.array([[t.lower().count(w) for w in self.vocab] for t in texts], dtype=float) + 1e-3
        return v / np.linalg.norm(v, axis=1, keepdims=True)


# ---------------------------------------------------------------------------
# Facts
# ---------------------------------------------------------------------------


def test_facts_from_subgraph_counts_and_category_summary():
    facts = facts_from_subgraph(toy_subgraph())
    by_kind = {k: [f for f in facts if f.kind == k] for k in ("relation", "attribute", "category")}
    assert len(by_kind["relation"]) == 6
    # S1, S2: category, controlled_property, sdm_type, active (4 each); GW1: active, n_sensors; AQ, CITY: name
    assert len(by_kind["attribute"]) == 4 + 4 + 2 + 1 + 1
    cat = {(f.relation, f.object) for f in by_kind["category"]}
    assert cat == {("count", "2"), ("service", "air quality"), ("observes", "pm25"),
                   ("sdm_type", "AirQualityObserved")}
    assert all(f.subject == "PM2.5 sensor" for f in by_kind["category"])
    texts = {f.text for f in facts}
    assert "sensor S2 (PM2.5 sensor) is inactive (not reporting)" in texts
    assert "gateway GW1 has 2 sensors connected" in texts
    assert not any(f.relation in ("latitude", "gateway", "service") and f.kind == "attribute" for f in facts)
    f = by_kind["relation"][0]
    assert f.key == (f.subject, f.relation) and f.value == f.object


def mean_pool(token_embeddings, attention_mask) -> np.ndarray:
    """Reference sentence embeddings: the mean of the token embeddings where the mask is 1."""
    m = np.asarray(attention_mask, dtype=float)
    return (np.asarray(token_embeddings, dtype=float) * m[:, :, None]).sum(axis=1) / m.sum(axis=1, keepdims=True)


def test_reference_mean_pool_ignores_masked_tokens():
    emb = np.array([[[1.0, 0.0], [0.0, 1.0], [9.0, 9.0]], [[2.0, 2.0], [4.0, 6.0], [0.0, 0.0]]])
    mask = np.array([[1, 1, 0], [1, 1, 1]])
    assert mean_pool(emb, mask).tolist() == [[0.5, 0.5], [2.0, 8.0 / 3.0]]


def test_recall_at_k_on_facts():
    a, b, c, d = (Fact(x, "r", "o", "attribute", x) for x in "abcd")
    assert recall_at_k([c, a, d, b], {a, b}, 1) == 0.0
    assert recall_at_k([c, a, d, b], {a, b}, 2) == 0.5
    assert recall_at_k([c, a, d, b], {a, b}, 4) == 1.0
    with pytest.raises(ValueError, match="gold: a question needs at least one gold fact"):
        recall_at_k([a], set(), 1)
    with pytest.raises(ValueError, match="k = 0"):
        recall_at_k([a], {a}, 0)


def test_relation_cues():
    assert detect_relations("Which gateway does AQ-S001 send its data through?") == {"CONNECTED_TO"}
    assert detect_relations("Is AQ-S001 currently reporting?") == {"active"}
    assert detect_relations("What quantity does AQ-S001 sense?") == {"controlled_property", "observes"}
    assert detect_relations("How many sensors use AQ-GW01?") == {"n_sensors", "count"}
    assert detect_relations("What is a PM2.5 sensor?") == set()


# ---------------------------------------------------------------------------
# Retriever with a transparent embedder
# ---------------------------------------------------------------------------


def test_entity_filter_keeps_facts_of_the_named_entity():
    facts = facts_from_subgraph(toy_subgraph())
    r = Retriever(facts, BagOfWords(), relation_filter=False)
    assert r.mentioned("Which gateway is S1 connected to?") == ["S1"]
    assert r.mentioned("What is a PM2.5 sensor?") == ["PM2.5 sensor"]
    got = r.retrieve("Which gateway is S1 connected to?", k=50)
    assert {s.fact.subject for s in got} == {"S1"}  # S1 is never an object here
    top = r.retrieve("Which gateway is S1 connected to?", k=1)[0].fact
    assert (top.subject, top.relation, top.object) == ("S1", "CONNECTED_TO", "GW1")
    scores = [s.score for s in got]
    assert scores == sorted(scores, reverse=True)


def test_relation_filter_and_explicit_filters():
    facts = facts_from_subgraph(toy_subgraph())
    r = Retriever(facts, BagOfWords())
    got = r.retrieve("Is S2 currently reporting?", k=5)
    assert [(s.fact.subject, s.fact.relation) for s in got] == [("S2", "active")]
    explicit = r.retrieve("anything", k=10, entities=["GW1"], relations=["SERVES_IN", "CONNECTED_TO"])
    assert {(s.fact.subject, s.fact.relation, s.fact.object) for s in explicit} == {
        ("GW1", "SERVES_IN", "AQ"), ("S1", "CONNECTED_TO", "GW1"), ("S2", "CONNECTED_TO", "GW1")}
    assert r.retrieve("anything", k=3, entities=["nobody"]) == []  # an explicit filter is never relaxed
    # a detected filter that would leave nothing is skipped instead
    assert len(r.retrieve("Is the weather nice?", k=3)) == 3
    with pytest.raises(PromptingError, match="k = 0"):
        r.retrieve("x", k=0)
    with pytest.raises(PromptingError, match="question = ''"):
        r.retrieve("", k=1)
    with pytest.raises(PromptingError, match="facts: the retriever needs at least one fact"):
        Retriever([], BagOfWords())


def test_fig4_question_retrieves_the_category_facts():
    facts = facts_from_subgraph(toy_subgraph())
    out = answer("What is a PM2.5 sensor?", Retriever(facts, BagOfWords()), k=5)
    assert {(s.fact.subject, s.fact.kind) for s in out.facts} == {("PM2.5 sensor", "category")}
    assert len(out.facts) == 4
    for piece in ("measures pm25", "air quality service", "AirQualityObserved", "holds 2 PM2.5 sensors"):
        assert piece in out.text
    assert out.verbaliser == "template"
    assert set(out.subgraph().nodes) == {"PM2.5 sensor", "2", "air quality", "pm25", "AirQualityObserved"}


def test_generated_questions_are_seeded_and_answerable():
    facts = facts_from_subgraph(toy_subgraph())
    qs = generate_questions(facts, 12, seed=3)
    assert qs == generate_questions(facts, 12, seed=3)
    assert [q.template for q in qs[:6]] == ["what_is_category", "gateway_of", "service_of", "measures",
                                           "is_active", "sensor_count"]
    corpus = set(facts)
    assert all(q.gold and q.gold <= corpus for q in qs)
    assert qs[0].text == "What is a PM2.5 sensor?" and len(qs[0].gold) == 4
    with pytest.raises(PromptingError, match="n = 0"):
        generate_questions(facts, 0, seed=0)


def test_evaluate_retrieval_shares_one_batch_of_question_embeddings():
    facts = facts_from_subgraph(toy_subgraph())
    emb = BagOfWords()
    r = Retriever(facts, emb)
    qs = generate_questions(facts, 6, seed=0)
    df = evaluate_retrieval(r, qs, ks=(1, 5))
    assert emb.calls == 2  # the facts once, all questions once
    assert len(df) == 3 * 6 * 2
    full = df[(df["mode"] == "entity + relation filter + embedding") & (df["k"] == 5)]
    assert full["recall"].tolist() == [1.0] * 6
    with pytest.raises(PromptingError, match="modes: 'bm25'"):
        evaluate_retrieval(r, qs, ks=1, modes=("bm25",))


def test_recall_by_mode_orders_modes_and_averages_per_k():
    import pandas as pd

    recall = pd.DataFrame({"mode": [RETRIEVAL_MODES[2], RETRIEVAL_MODES[0], RETRIEVAL_MODES[0], RETRIEVAL_MODES[2]],
                           "k": [5, 5, 5, 1], "recall": [1.0, 0.5, 0.0, 0.5]})
    table = recall_by_mode(recall)
    assert table.index.tolist() == [RETRIEVAL_MODES[0], RETRIEVAL_MODES[2]] and table.columns.tolist() == [1, 5]
    assert table.loc[RETRIEVAL_MODES[0], 5] == 0.25 and table.loc[RETRIEVAL_MODES[2], 1] == 0.5


def test_recall_glues_read_the_top_k_column_of_both_ends():
    import pandas as pd

    recall = pd.DataFrame({"mode": [RETRIEVAL_MODES[0]] * 2 + [RETRIEVAL_MODES[2]] * 2, "k": [1, 3, 1, 3],
                           "recall": [0.0, 0.25, 0.5, 1.0]})
    assert recall_glues(recall_by_mode(recall), 3) == {
        "prompting_recall_full": 1.0, "prompting_recall_embedding": 0.25, "prompting_top_k": 3}
    assert recall_glues(recall_by_mode(recall), 1)["prompting_recall_full"] == 0.5


def test_fig4_panels_draw_every_entity_and_fact():
    import matplotlib

    matplotlib.use("Agg")  # off-screen (the library never picks a backend)
    import matplotlib.pyplot as plt

    store = NetworkxStore("fig4-draw")
    store.rebuild(twin_with_two_gateways().nodes.values(), twin_with_two_gateways().relations)
    _, _, g = category_neighbourhood(store, store.request(), "PM2.5 sensor")
    fig, (left, middle) = plt.subplots(1, 2)
    fig4.draw_neighbourhood(g, left, "around GW1")
    assert left.get_title() == "around GW1" and len(left.texts) == len(g.nodes)  # one label per entity
    assert {t.get_text() for t in left.texts} >= {"S1\nPM2.5 sensor", "GW1", "CITY"}  # sensors show their category
    assert len(left.get_legend().get_texts()) == len(fig4.KIND_COLOURS) + len(fig4.RELATION_COLOURS)
    sub = answer("What is a PM2.5 sensor?", Retriever(facts_from_subgraph(toy_subgraph()), BagOfWords()), k=5).subgraph()
    fig4.draw_facts(sub, middle, "facts")
    # a label per entity and one per fact (the four category facts of the PM2.5 sensor)
    assert len(middle.texts) == len(sub.nodes) + len(sub.edges) == 5 + 4
    plt.close(fig)


def test_category_neighbourhood_is_the_gateway_of_the_first_such_sensor():
    store = NetworkxStore("fig4")
    sub = toy_subgraph()
    nodes = [TwinNode(n.id, n.kind, {**n.metadata, "gateway": "GW1"}) if n.kind == "sensor" else n
             for n in sub.nodes.values()]  # a sensor of the twin names its gateway (twin_from_topology)
    store.rebuild(nodes, sub.relations)
    seed, part, g = category_neighbourhood(store, store.request(), "PM2.5 sensor")
    assert seed == "GW1" and set(part.nodes) == {"GW1", "S1", "S2", "AQ"}  # one hop around GW1
    assert g.has_edge("AQ", "CITY", key="IN") and g.nodes["CITY"]["kind"] == "city"


# ---------------------------------------------------------------------------
# Eq. (10) on a generated twin: the same questions, scored against the truth
# ---------------------------------------------------------------------------


def twin_with_two_gateways() -> Subgraph:
    """The toy twin with a second gateway and each sensor naming its gateway (as twin_from_topology writes it)."""
    sub = toy_subgraph()
    nodes = {k: TwinNode(n.id, n.kind, {**n.metadata, "gateway": "GW1"}) if n.kind == "sensor" else n
             for k, n in sub.nodes.items()}
    nodes["GW2"] = TwinNode("GW2", "gateway", {"service": "AQ", "n_sensors": 0, "active": True})
    return Subgraph(1, nodes, sub.relations | {R("GW2", "SERVES_IN", "AQ")})


def hand_questions(facts) -> list:
    """Six questions with hand-picked gold facts of the true twin (fig4's templates)."""
    by = {(f.subject, f.relation): f for f in facts}
    ask = [("gateway_of", "Which gateway does S1 send its data through?", [("S1", "CONNECTED_TO")]),
           ("gateway_of", "Which gateway does S2 send its data through?", [("S2", "CONNECTED_TO")]),
           ("service_of", "Which smart-city service is S1 part of?", [("S1", "SERVES_IN")]),
           ("is_active", "Is S2 currently reporting?", [("S2", "active")]),
           ("sensor_count", "How many sensors use GW1?", [("GW1", "n_sensors")]),
           ("what_is_category", "What is a PM2.5 sensor?",
            [("PM2.5 sensor", r) for r in ("count", "service", "observes", "sdm_type")])]
    return [Question(text, frozenset(by[k] for k in keys), t) for t, text, keys in ask]


def answers_from(truth: Subgraph, relations, questions, k: int = 5):
    """compare_twins of the true twin and the twin holding ``relations`` (both stored and read back)."""
    graphs = {}
    for name, rels in (("true", truth.relations), ("generated", relations)):
        nodes, kept, _ = generated_twin(truth, rels)
        store = NetworkxStore(f"answers-{name}")
        store.rebuild(nodes.values(), kept)
        graphs[name] = Retriever(facts_from_subgraph(store.request()), BagOfWords())
    return compare_twins(graphs, questions, k)


def correct_by_question(per_question, graph: str) -> list[int]:
    return per_question[per_question["graph"] == graph]["correct"].tolist()


def test_generated_twin_of_the_true_relations_is_the_true_twin():
    for profile in ("quick", "paper"):
        ds = generate_dataset(resolve(profile).topology)
        nodes, rels = twin_from_topology(ds.topology)
        truth = Subgraph(1, nodes, frozenset(rels))
        got, kept, dropped = generated_twin(truth, ds.topology.device_relations())
        assert got == nodes and kept == rels and dropped == []
        assert facts_from_subgraph(Subgraph(2, got, frozenset(kept))) == facts_from_subgraph(truth)
    # without any generated relation: only the non-device relations stay, and the counts they imply are gone
    got, kept, _ = generated_twin(truth, set())
    assert kept == {r for r in rels if ds.topology.nodes[r.head].kind not in ("sensor", "gateway")}
    assert all(n.get("n_sensors") == 0 for n in got.values() if n.kind == "gateway")
    assert not any(n.get("gateway") or n.get("service") for n in got.values() if n.kind in ("sensor", "gateway"))


def test_generated_twin_drops_what_the_twin_cannot_hold():
    truth = twin_with_two_gateways()
    bad = [R("S1", "CONNECTED_TO", "GW9"),  # unknown entity
           R("S1", "CONNECTED_TO", "S2"),  # a sensor is no gateway
           R("S1", "SERVES_IN", "GW1"),  # a gateway is no service
           R("GW1", "CONNECTED_TO", "GW1"),  # a self-link
           R("AQ", "IN", "CITY")]  # not a device relation: never generated, kept from the truth
    got, kept, dropped = generated_twin(truth, set(bad) | {R("S1", "CONNECTED_TO", "GW2")})
    assert sorted(dropped) == sorted(bad)
    assert kept == {R("AQ", "IN", "CITY"), R("S1", "CONNECTED_TO", "GW2")}
    assert got["S1"].get("gateway") == "GW2" and got["S1"].get("service") is None
    assert (got["GW1"].get("n_sensors"), got["GW2"].get("n_sensors")) == (0, 1)
    assert got["S1"].get("category") == "PM2.5 sensor" and got["S2"].get("active") is False  # the data's own


def test_a_generated_twin_equal_to_the_truth_scores_like_the_truth():
    truth = twin_with_two_gateways()
    per_question, table = answers_from(truth, truth.relations, hand_questions(facts_from_subgraph(truth)))
    assert correct_by_question(per_question, "true") == [1] * 6  # the filters isolate each gold fact
    assert correct_by_question(per_question, "generated") == [1] * 6
    assert table.loc["generated", "correct"] == table.loc["true", "correct"] == 1.0
    assert table.loc["generated − true", ["correct", "recall", "correct_low", "correct_high"]].tolist() == [0.0] * 4
    assert table["n_questions"].tolist() == [6, 6, 6]


def test_a_missing_relation_makes_exactly_the_questions_that_need_it_wrong():
    truth = twin_with_two_gateways()
    per_question, table = answers_from(truth, truth.relations - {R("S1", "CONNECTED_TO", "GW1")},
                                       hand_questions(facts_from_subgraph(truth)))
    # S1's gateway is unknown, and GW1 now counts 1 sensor instead of 2: questions 1 and 5 fail
    assert correct_by_question(per_question, "generated") == [0, 1, 1, 1, 0, 1]
    gen = per_question[per_question["graph"] == "generated"]
    assert gen["recall"].tolist() == [0.0, 1.0, 1.0, 1.0, 0.0, 1.0]
    assert table.loc["generated", "correct"] == pytest.approx(4 / 6)
    assert table.loc["generated − true", "recall"] == pytest.approx(-2 / 6)  # recall@5 falls from 1 to 4/6


def test_a_fabricated_relation_is_not_counted_correct():
    truth = twin_with_two_gateways()
    questions = hand_questions(facts_from_subgraph(truth))
    moved = truth.relations - {R("S2", "CONNECTED_TO", "GW1")} | {R("S2", "CONNECTED_TO", "GW2")}
    per_question, _ = answers_from(truth, moved, questions)
    gen = per_question[per_question["graph"] == "generated"]
    assert gen["correct"].tolist() == [1, 0, 1, 1, 0, 1]  # S2's gateway is wrong; GW1 counts 1 sensor
    assert gen["recall"].tolist()[1] == 0.0
    # the true uplink kept and a second, invented one beside it: retrieved (recall 1) but contradicted
    extra = truth.relations | {R("S2", "CONNECTED_TO", "GW2")}
    per_question, table = answers_from(truth, extra, questions)
    gen = per_question[per_question["graph"] == "generated"]
    assert gen["correct"].tolist() == [1, 0, 1, 1, 1, 1] and gen["recall"].tolist() == [1.0] * 6
    assert table.loc["generated − true", "correct"] == pytest.approx(-1 / 6)


def test_generated_uplink_questions_are_correct_exactly_when_the_uplink_is_the_true_one_alone():
    ds = generate_dataset(resolve("quick").topology)
    nodes, rels = twin_from_topology(ds.topology)
    truth = Subgraph(1, nodes, frozenset(rels))
    rng = np.random.default_rng(5)
    gateways = sorted(n for n, v in nodes.items() if v.kind == "gateway")
    generated = set()
    for r in sorted(ds.topology.device_relations()):  # a corrupted copy: lost, moved and doubled uplinks
        u = rng.random()
        if r.type == "CONNECTED_TO" and nodes[r.head].kind == "sensor" and u < 0.6:
            other = R(r.head, "CONNECTED_TO", gateways[int(rng.integers(len(gateways)))])
            generated |= [set(), {other}, {r, other}][int(u / 0.2)]
        else:
            generated.add(r)
    questions = [q for q in generate_questions(facts_from_subgraph(truth), 60, seed=1) if q.template == "gateway_of"]
    per_question, _ = answers_from(truth, generated, questions)
    gen = per_question[per_question["graph"] == "generated"]
    expected = []
    for q in questions:
        (gold,) = q.gold
        ups = {r.tail for r in generated if r.head == gold.subject and r.type == "CONNECTED_TO"}
        expected.append(int(ups == {gold.object}))
    assert gen["correct"].tolist() == expected and 0 < sum(expected) < len(expected)
    assert correct_by_question(per_question, "true") == [1] * len(questions)


def test_score_answers_recall_is_the_full_mode_recall_of_evaluate_retrieval():
    facts = facts_from_subgraph(toy_subgraph())
    r = Retriever(facts, BagOfWords())
    qs = generate_questions(facts, 12, seed=4)
    mine = score_answers(r, qs, 2)
    full = evaluate_retrieval(r, qs, ks=2, modes=(RETRIEVAL_MODES[2],))
    assert mine["recall"].tolist() == full["recall"].tolist() and mine["qid"].tolist() == list(range(12))
    assert set(mine.loc[mine["correct"] == 1, "recall"]) <= {1.0}  # correct needs every gold fact
    with pytest.raises(PromptingError, match="k = 0"):
        score_answers(r, qs, 0)
    with pytest.raises(PromptingError, match="questions: need at least one question"):
        score_answers(r, [], 1)
    with pytest.raises(PromptingError, match="retrievers: need at least one twin"):
        compare_twins({}, qs, 1)


# ---------------------------------------------------------------------------
# Verbalisers
# ---------------------------------------------------------------------------


def test_template_verbaliser_says_exactly_its_facts_in_order():
    f = Fact("S1", "active", "True", "attribute", "sensor S1 is active")
    h = Fact("S1", "CONNECTED_TO", "GW1", "relation", "sensor S1 is connected to gateway GW1.")
    g = TemplateVerbaliser()
    assert g("q", [f, f]) == "Sensor S1 is active."  # a repeated fact is said once
    assert g("q", [f, h]) == "Sensor S1 is active. Sensor S1 is connected to gateway GW1."
    assert g("q", [h, f]) == "Sensor S1 is connected to gateway GW1. Sensor S1 is active."  # retrieval order
    assert g("q", [h]) == "Sensor S1 is connected to gateway GW1."  # no second period
    assert g("another question", [f]) == g("q", [f])  # the answer comes from the facts, not the question
    assert g("q", []) == "The twin holds no fact that answers this question."


def test_llm_verbaliser_conditions_on_the_facts():
    from gentwin.llm import tiny_backbone

    model, tok = tiny_backbone(seed=0, max_positions=1024)
    facts = [Fact("S1", "active", "True", "attribute", "sensor S1 is active"),
             Fact("S1", "CONNECTED_TO", "GW1", "relation", "sensor S1 is connected to gateway GW1")]
    g = LLMVerbaliser(model, tok, max_new_tokens=8)
    ids = g.prompt_ids("Is S1 active?", facts)
    prompt = tok.decode(ids)
    assert prompt == build_prompt("Is S1 active?", facts)
    assert "- sensor S1 is active\n- sensor S1 is connected to gateway GW1\n" in prompt  # every fact, in order
    assert "gateway GW1" not in tok.decode(g.prompt_ids("Is S1 active?", facts[:1]))  # and only those given
    seen = []  # what the model is asked to continue: exactly the prompt with these facts
    generate = model.generate
    model.generate = lambda input_ids, **kw: (seen.append(input_ids[0].tolist()), generate(input_ids=input_ids, **kw))[1]
    try:
        out = g("Is S1 active?", facts)
        g("Is S1 active?", facts[:1])
    finally:
        del model.generate
    assert seen == [ids, g.prompt_ids("Is S1 active?", facts[:1])]
    assert isinstance(out, str) and out == g("Is S1 active?", facts)  # greedy: deterministic
    assert "Answer the question" not in out  # only the continuation is returned
    short = LLMVerbaliser(tiny_backbone(seed=0, max_positions=64)[0], tok, max_new_tokens=8)
    assert len(short.prompt_ids("Is S1 active?", facts)) == 64 - 8  # cut from the left to fit
    assert tok.decode(short.prompt_ids("Is S1 active?", facts)).endswith("Answer:")
    with pytest.raises(PromptingError, match="max_new_tokens = 0"):
        LLMVerbaliser(model, tok, max_new_tokens=0)


# ---------------------------------------------------------------------------
# The real MiniLM (local, small): a few checks only
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm():
    return MiniLMEmbedder()


def test_minilm_embeddings_are_unit_vectors_and_match_mean_pool(minilm):
    import torch

    texts = ["a PM2.5 sensor measures pm25", "sensor AQ-S001 is connected to gateway AQ-GW01"]
    v = minilm.encode(texts)
    assert v.shape == (2, 384) and np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert np.allclose(minilm.encode(texts[:1]), v[:1], atol=1e-5)  # batch padding changes nothing
    batch = minilm.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = minilm.model(**batch).last_hidden_state.numpy()
    ref = mean_pool(hidden, batch["attention_mask"].numpy())
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    assert np.allclose(ref, v, atol=1e-5)


def test_minilm_retrieval_on_a_generated_twin(minilm):
    ds = generate_dataset(resolve("quick").topology)
    nodes, rels = twin_from_topology(ds.topology)
    store = NetworkxStore("prompting-test")
    store.rebuild(nodes.values(), rels)
    facts = facts_from_subgraph(store.request())
    r = Retriever(facts, minilm)
    out = answer("What is a PM2.5 sensor?", r, k=5)
    assert {(s.fact.subject, s.fact.kind) for s in out.facts} == {("PM2.5 sensor", "category")}
    # without filters the embedding alone must still rank a PM2.5 category fact first
    plain = r.with_filters(entity_filter=False, relation_filter=False).retrieve("What is a PM2.5 sensor?", 1)
    assert plain[0].fact.subject == "PM2.5 sensor"
    df = evaluate_retrieval(r, generate_questions(facts, 12, seed=0), ks=5)
    means = df.groupby("mode")["recall"].mean()
    assert means["entity + relation filter + embedding"] == 1.0
    assert means["entity + relation filter + embedding"] >= means["embedding"]


# ---------------------------------------------------------------------------
# The chapter's run on the generated twin (a tiny backbone in place of SmolLM2)
# ---------------------------------------------------------------------------


def test_generated_twin_answers_glue_every_score_under_its_name():
    import pandas as pd

    stats = ("correct", "correct_low", "correct_high", "recall", "recall_low", "recall_high")
    scores = pd.DataFrame([[0.9, 0.8, 1.0, 0.95, 0.9, 1.0], [0.5, 0.3, 0.7, 0.6, 0.4, 0.8],
                           [-0.4, -0.6, -0.2, -0.35, -0.5, -0.2]], columns=stats,
                          index=["true graph", "generated graph", "generated graph − true graph"])
    rel = {"produced": 10, "correct": 8, "true": 16, "precision": 0.8, "recall": 0.5}
    run = fig4.GeneratedTwinAnswers(None, scores, rel, [R("S1", "CONNECTED_TO", "S2")], 24, 3, "teacher_forced", 12.4)
    glues = run.glues()
    assert len(glues) == 5 + 3 * 2 * 3  # five about the run; 3 twins x 2 measures x (mean, low, high)
    assert glues["prompting_generated_correct_true"] == 0.9 and glues["prompting_generated_correct"] == 0.5
    assert glues["prompting_generated_recall_gap_low"] == -0.5 and glues["prompting_generated_correct_high"] == 0.7
    assert glues["prompting_generated_mode"] == "the teacher-forced read-out"
    assert (glues["prompting_generated_epochs"], glues["prompting_generated_relation_recall"]) == (3, 0.5)
    assert run.summary() == ("24 training instances, 3 epochs; the model wrote 10 relations, 8 of the 16 true ones "
                             "(precision 0.80, recall 0.50); 1 could not be stored. Training, read-out and answering "
                             "took 12 s.")


@pytest.fixture
def generated_run(tiny_adapted, toy_ds, one_thread, monkeypatch):
    """``run(extract=None)``: answer_from_generated_twin on the toy city with the tiny backbone (``extract``
    replaces the adapter's read-out); returns the run, the store and the questions."""
    from gentwin import training as T

    model, tok = tiny_adapted
    task = T.prepare_task(model, tok, toy_ds, max_length=256)
    monkeypatch.setattr(fig4, "setup_twin", lambda settings, *, dataset, step_cache=None: (model, tok, dataset, task))
    settings = resolve("quick", demo_epochs=1, batch_size=4, top_k=5, n_questions=12)

    def run(extract=None):
        if extract is not None:
            monkeypatch.setattr(fig4, "extract_graph", lambda model, task, mode: extract)
        nodes, rels = twin_from_topology(toy_ds.topology)
        store = NetworkxStore("generated-run")
        store.rebuild(nodes.values(), rels)
        whole = store.request()
        retriever = Retriever(facts_from_subgraph(whole), BagOfWords())
        questions = generate_questions(facts_from_subgraph(whole), 12, seed=0)
        return fig4.answer_from_generated_twin(settings, toy_ds, store, whole, retriever, questions), store, questions

    return run


def test_a_generated_twin_of_the_true_relations_answers_like_the_truth(generated_run, toy_ds):
    truth = toy_ds.topology.device_relations()
    run, store, questions = generated_run(extract=set(truth))
    assert store.request().version == 2  # the generated twin is a second version of the same store
    assert (run.relations["precision"], run.relations["recall"], run.dropped) == (1.0, 1.0, [])
    assert run.n_instances == len(toy_ds.split("train")) == 3 and run.epochs == 1
    gap = run.scores.loc["generated graph − true graph"]
    assert (gap["correct"], gap["recall"]) == (0.0, 0.0)
    assert len(run.per_question) == 2 * len(questions)


def test_a_generated_twin_missing_an_uplink_answers_worse(generated_run, toy_ds):
    truth = sorted(toy_ds.topology.device_relations())
    uplink = next(r for r in truth if r.type == "CONNECTED_TO" and toy_ds.topology.nodes[r.head].kind == "sensor")
    run, store, questions = generated_run(extract=set(truth) - {uplink} | {R(uplink.head, "CONNECTED_TO", "NOWHERE")})
    assert run.dropped == [R(uplink.head, "CONNECTED_TO", "NOWHERE")]  # an unknown entity cannot be stored
    assert uplink not in store.request().relations
    assert run.relations["recall"] == pytest.approx((len(truth) - 1) / len(truth))
    assert run.scores.loc["true graph", "correct"] == 1.0  # the truth's answers do not depend on the model
    # wrong: exactly the questions about the sensor's gateway and about how many sensors that gateway serves
    needs = {(uplink.head, "CONNECTED_TO"), (uplink.tail, "n_sensors")}
    expected = [0 if any(f.key in needs for f in q.gold) else 1 for q in questions]
    per = run.per_question[run.per_question["graph"] == "generated graph"]
    assert per["correct"].tolist() == expected and expected.count(0) == 2  # both are among the 12 questions
    assert run.scores.loc["generated graph − true graph", "correct"] == pytest.approx(-2 / 12)


def test_the_adapters_own_read_out_is_stored_as_the_generated_twin(generated_run, toy_ds):
    run, store, _ = generated_run()  # the tiny model's own (teacher-forced) read-out after one epoch
    devices = {n for n, node in toy_ds.topology.nodes.items() if node.kind in ("sensor", "gateway")}
    stored = {r for r in store.request().relations if r.head in devices}
    assert len(stored) + len(run.dropped) == run.relations["produced"]  # every produced relation: stored or dropped
    assert run.scores.loc["true graph", "correct"] == 1.0
