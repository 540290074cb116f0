"""Tests of gentwin.training and gentwin.verbalise: verbalisation, masking, the cached path, training on a toy topology."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from gentwin import training as T
from gentwin import verbalise as V
from gentwin.adapter import TwinAdapterConfig, adapter_modules, add_twin_adapters
from gentwin.config import TopologyConfig
from gentwin.frozen import frozen_states, full_hidden
from gentwin.llm import BackboneError, char_tokenizer, freeze, head_logits, load_backbone
from gentwin.metrics import compare_graph
from gentwin.topology import Relation, generate_dataset

pytestmark = pytest.mark.usefixtures("one_thread")

QUICK_TOPOLOGY = TopologyConfig(n_gateways=6, n_sensors=24, n_gateway_links=3, n_instances=60)


def tiny_llama(seed: int = 0, layers: int = 2, hidden: int = 64, init: float = 0.3):
    """A random LLaMA with a character tokenizer, frozen.

    ``initializer_range`` 0.3 (instead of transformers' 0.02) gives attention
    patterns that tell positions apart, so a top adapter can memorise a few
    sequences; with 0.02 the hidden states carry little more than the
    current character.
    """
    tok = char_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=True,
        initializer_range=init,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    freeze(model)
    return model, tok


def randomise_adapters(model, seed: int = 1, scale: float = 0.1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for adapter in adapter_modules(model).values():
            for p in adapter.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * scale)


@pytest.fixture(scope="module")
def quick_ds():
    return generate_dataset(QUICK_TOPOLOGY)


@pytest.fixture
def adapted():
    model, tok = tiny_llama()
    add_twin_adapters(model, TwinAdapterConfig(bottleneck=64, n_top=2))
    return model, tok


# --- verbalisation ----------------------------------------------------------------------------


def test_verbalise_sensor_and_gateway_prompts_follow_eq2(quick_ds):
    topo = quick_ds.topology
    for inst in quick_ds.instances[:20]:
        node = topo.nodes[inst.node_id]
        prompt, _ = V.verbalise(quick_ds, inst)
        if node.kind == "sensor":
            assert prompt == f"[:s] {{{node.id}, {node.gateway}}} ->"
        else:
            assert prompt == f"[:gw] {{{node.id}, {topo.sensor_count(node.id)}}} ->"
    kinds = {topo.nodes[i.node_id].kind for i in quick_ds.instances[:20]}
    assert kinds == {"sensor", "gateway"}


def test_target_holds_exactly_the_nodes_own_relations_sorted(quick_ds):
    topo = quick_ds.topology
    for node in topo.devices():
        inst = next(i for i in quick_ds.instances if i.node_id == node.id)
        _, target = V.verbalise(quick_ds, inst)
        parsed = V.parse_triples(target)
        assert parsed == sorted(parsed)
        assert set(parsed) == {r for r in topo.relations if r.head == node.id}
        assert target == "; ".join(r.as_text() for r in sorted(parsed))


def test_parse_triples_round_trips_and_skips_unknown_types():
    rels = [Relation("AQ-S001", "SERVES_IN", "AQ"), Relation("AQ-S001", "CONNECTED_TO", "AQ-GW02")]
    assert V.parse_triples(V.facts_text(rels)) == sorted(rels)
    assert V.parse_triples("(a, LIKES, b) (a, IN") == []


def test_prompt_for_a_service_node_is_an_error(quick_ds):
    with pytest.raises(V.VerbaliseError, match="node_id = 'AQ'"):
        V.node_prompt(quick_ds.topology, "AQ")
    with pytest.raises(V.VerbaliseError, match="instance = "):
        V.verbalise(quick_ds, "AQ-S001")


# --- encoding and the loss mask ----------------------------------------------------------------


def test_labels_mask_the_prompt_and_padding_and_keep_the_target_and_eos():
    tok = char_tokenizer()
    pairs = [("[:s] {a, g} ->", "(a, IN, g); (a, SERVES_IN, s)"), ("[:gw] {g, 1} ->", "(g, IN, s)")]
    enc = V.encode_pairs(tok, pairs, max_length=128)
    for k, (prompt, target) in enumerate(pairs):
        p, n = int(enc.prompt_lengths[k]), int(enc.lengths[k])
        assert p == len(prompt)  # one id per character
        assert n == len(prompt) + 1 + len(target) + 1  # " " + target + eos
        assert (enc.labels[k, :p] == -100).all()
        assert torch.equal(enc.labels[k, p:n], enc.input_ids[k, p:n])
        assert int(enc.labels[k, n - 1]) == tok.eos_token_id
        assert (enc.labels[k, n:] == -100).all() and (enc.attention_mask[k, n:] == 0).all()
        assert tok.decode(enc.input_ids[k, p:n - 1].tolist()) == " " + target
    a, b = enc.spans[0][0]
    c, d = enc.spans[0][1]
    assert tok.decode(enc.input_ids[0, a:b].tolist()) == " (a, IN, g);"
    assert tok.decode(enc.input_ids[0, c:d].tolist()) == " (a, SERVES_IN, s)"


def test_too_long_sequence_is_an_error_naming_max_length():
    with pytest.raises(V.VerbaliseError, match="max_length = 10: .* needs 19 tokens"):
        V.encode_pairs(char_tokenizer(), [("[:s] ->", "(a, IN, b)")], max_length=10)


def test_loss_counts_target_tokens_only(adapted):
    model, tok = adapted
    enc = V.encode_pairs(tok, [("[:s] {a, g} ->", "(a, IN, g)")], max_length=64)
    h = full_hidden(model, enc.input_ids, enc.attention_mask)
    loss = T.target_loss(model, h, enc.labels)
    # change a prompt token in the labels' eyes only: no effect; change a target label: effect
    p = int(enc.prompt_lengths[0])
    logits = head_logits(model, h)[0, :-1]
    manual = torch.nn.functional.cross_entropy(logits[p - 1:], enc.input_ids[0, p:])
    assert torch.allclose(loss, manual, atol=1e-6)


# --- the cached frozen part versus the plain model ------------------------------------------


@pytest.mark.parametrize("inside", [True, False])
def test_cached_path_gives_the_plain_models_loss(adapted, toy_ds, inside):
    model, tok = adapted
    randomise_adapters(model)  # non-zero adapters, so the top really differs from the backbone
    task = T.prepare_task(model, tok, toy_ds, max_length=256, restrict_vocab=False, inside=inside)
    assert task.frozen.inside is inside
    rows = torch.arange(len(task.node_ids))
    h_cached, labels, _ = T._batch_hidden(model, task, rows, "cached")
    h_plain, _, _ = T._batch_hidden(model, task, rows, "plain")
    with torch.no_grad():
        hf = model(input_ids=task.encoded.input_ids, attention_mask=task.encoded.attention_mask,
                   labels=task.encoded.labels).loss
        cached = T.target_loss(model, h_cached, labels)
        plain = T.target_loss(model, h_plain, labels)
    assert torch.allclose(cached, hf, atol=1e-5)
    assert torch.allclose(cached, plain, atol=1e-6)


def test_restricted_head_equals_full_head_on_kept_ids(adapted, toy_ds):
    model, tok = adapted
    randomise_adapters(model)
    task = T.prepare_task(model, tok, toy_ds, max_length=256, restrict_vocab=True)
    full_vocab = model.config.vocab_size
    assert 2 < len(task.vocab) < full_vocab
    h, _, _ = T._batch_hidden(model, task, torch.arange(3), "cached")
    with torch.no_grad():
        full = head_logits(model, h)
        kept = head_logits(model, h, task.vocab.ids)
    assert torch.equal(kept, full[..., task.vocab.ids])
    # every target token and eos are kept
    targets = task.encoded.labels[task.encoded.labels != -100].unique()
    assert bool((task.vocab.lookup[targets] >= 0).all())
    assert int(task.vocab.lookup[tok.eos_token_id]) >= 0


def test_frozen_part_must_not_hold_trainable_parameters(adapted):
    model, tok = adapted  # adapters on layers 0 and 1
    enc = V.encode_pairs(tok, [("[:s] ->", "(a, IN, b)")])
    assert T.split_layer(model) == 0
    with pytest.raises(BackboneError, match="start_layer = 1: layers below it have trainable parameters"):
        frozen_states(model, enc, 1)


# --- training passes and the read-out -------------------------------------------------------


def test_passes_are_seeded_permutations_or_the_stream_order():
    rows = torch.arange(50)
    a = T.pass_rows(rows, True, torch.Generator().manual_seed(3))
    b = T.pass_rows(rows, True, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not torch.equal(a, rows)
    assert sorted(a.tolist()) == rows.tolist()
    assert torch.equal(T.pass_rows(rows, False, torch.Generator()), rows)


def test_teacher_forced_counts_a_triple_only_when_every_token_is_the_argmax(adapted, toy_ds, monkeypatch):
    model, tok = adapted
    task = T.prepare_task(model, tok, toy_ds, max_length=256)
    rows = list(range(len(task.node_ids)))
    enc = task.encoded

    def fake(shift):
        def _tf(model, task, rows, path, batch_size):
            preds = []
            for r in rows:
                ids = enc.input_ids[r].tolist()
                # position t predicts token t + 1 (shift 0: perfect); shift 1 repeats the current token
                preds.append([ids[t + 1 - shift] for t in range(len(ids) - 1)])
            return preds, [0.0] * len(rows)
        return _tf

    monkeypatch.setattr(T, "_teacher_forced", fake(0))
    assert T.evaluate(model, task, rows)["accuracy"] == 1.0
    monkeypatch.setattr(T, "_teacher_forced", fake(1))
    # the shifted copy still contains every triple's text, but not at the right positions
    sc = T.evaluate(model, task, rows)
    assert sc["accuracy"] == 0.0 and sc["n_correct"] == 0


# --- training -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(toy_ds, one_thread, toy_config):
    """The toy's training nodes (each seen 4 times per epoch), 60 epochs: trained once for several tests."""
    model, tok = tiny_llama()
    add_twin_adapters(model, TwinAdapterConfig(bottleneck=64, n_top=2))
    task = T.prepare_task(model, tok, toy_ds, max_length=256)
    train = toy_ds.split("train")
    hist = T.train_twin(model, task, train * 4, toy_config(), seed=0, epochs=60, eval_splits=("train",),
                        eval_every=20)
    return model, task, train, hist


def test_training_on_a_toy_topology_lowers_the_loss_and_recovers_its_triples(trained, toy_config):
    model, task, train, hist = trained
    cfg = toy_config()
    assert (cfg.learning_rate, cfg.discount_factor, cfg.optimizer) == (0.08, 0.99, "sgd")
    ev = hist[hist.split == "train"]
    assert ev.epoch.tolist() == [0, 20, 40, 60]
    assert ev.loss.iloc[-1] < 0.05 * ev.loss.iloc[0]
    assert ev.accuracy.iloc[0] == 0.0 and ev.accuracy.iloc[-1] == 1.0
    # greedy decoding from the prompts alone gives back exactly the training nodes' facts
    rows = sorted({task.row_of[i.node_id] for i in train})
    produced, _ = T.predict_triples(model, task, rows, mode="generate", shortcut=False)
    assert produced == [set(task.gold[r]) for r in rows]
    # the learning rate decays by the discount factor every epoch
    lrs = hist.drop_duplicates("epoch").set_index("epoch").lr
    assert lrs[2] / lrs[1] == pytest.approx(0.99) and lrs[60] / lrs[1] == pytest.approx(0.99 ** 59)


def test_generation_shortcut_equals_plain_greedy_decoding(trained, adapted):
    model, task, _, _ = trained
    rows = list(range(len(task.node_ids)))  # seen nodes (exact) and unseen ones (not)
    fast, _ = T.predict_triples(model, task, rows, mode="generate", shortcut=True)
    slow, _ = T.predict_triples(model, task, rows, mode="generate", shortcut=False)
    assert fast == slow
    # and on an untrained, randomised model, where nearly every row leaves the gold path early
    other, tok = adapted
    randomise_adapters(other, scale=0.3)
    t2 = T.prepare_task(other, tok, task.dataset, max_length=256)
    assert T.predict_triples(other, t2, rows, mode="generate")[0] == \
        T.predict_triples(other, t2, rows, mode="generate", shortcut=False)[0]


def test_extract_graph_after_training_recovers_the_training_facts(trained, toy_ds):
    model, task, train, _ = trained
    graph = T.extract_graph(model, task)
    facts = {r for i in train for r in toy_ds.topology.relations_of(i.node_id)}
    assert facts <= graph
    cmp = compare_graph(graph, toy_ds.topology)
    assert cmp["true"] == 11 and cmp["correct"] >= len(facts) and cmp["recall"] == cmp["correct"] / 11


def test_reset_adapters_reproduces_a_fresh_initialisation(adapted, toy_ds):
    model, tok = adapted
    randomise_adapters(model)
    T.reset_adapters(model, seed=7)
    fresh, _ = tiny_llama()
    add_twin_adapters(fresh, TwinAdapterConfig(bottleneck=64, n_top=2, seed=7))
    for i, a in adapter_modules(model).items():
        b = adapter_modules(fresh)[i]
        assert torch.equal(a.down.weight, b.down.weight)
        assert int(a.up.weight.abs().sum()) == 0


def test_empty_training_split_is_a_clear_error(adapted, toy_ds, toy_config):
    model, tok = adapted
    task = T.prepare_task(model, tok, toy_ds, max_length=256)
    with pytest.raises(T.TrainingError, match=r"order = \[\]: the training split is empty"):
        T.train_twin(model, task, [], toy_config(), seed=0)


def test_unknown_backbone_path_is_an_error_from_gentwin_llm(tmp_path):
    with pytest.raises(BackboneError, match="no/such/model"):
        load_backbone("no/such/model")


def test_model_without_adapters_cannot_use_the_cached_path(toy_ds):
    model, tok = tiny_llama()
    with pytest.raises(T.TrainingError, match="has no Twin Adapters"):
        T.prepare_task(model, tok, toy_ds, max_length=256)


def test_same_seed_twice_gives_identical_training_and_outputs(tiny_adapted, toy_ds, toy_config):
    """Issue 12 (determinism): the same seed on one machine gives the same numbers, to the last bit."""
    model, tok = tiny_adapted
    task = T.prepare_task(model, tok, toy_ds, max_length=256)
    train = toy_ds.split("train") * 2
    cfg = toy_config(epochs=2)
    outs = []
    for _ in range(2):
        T.reset_adapters(model, 3)
        hist = T.train_twin(model, task, train, cfg, seed=3, eval_splits=("train", "validation"))
        weights = {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}
        produced, losses = T.predict_triples(model, task, range(len(task.node_ids)), mode="generate")
        outs.append((hist.drop(columns="seconds"), weights, produced, losses))
    (h1, w1, p1, l1), (h2, w2, p2, l2) = outs
    assert h1.equals(h2) and p1 == p2 and l1 == l2
    assert w1 and all(torch.equal(w1[k], w2[k]) for k in w1)
    T.reset_adapters(model, 4)  # another seed draws other adapters, so the test could fail
    T.train_twin(model, task, train, cfg, seed=4, eval_splits=())
    now = dict(model.named_parameters())
    assert any(not torch.equal(v, now[k]) for k, v in w1.items())


def test_opaque_ids_hide_type_and_parent_and_parse_back(tiny_adapted, toy_ds):
    model, tok = tiny_adapted
    named = T.prepare_task(model, tok, toy_ds, max_length=256, cache=False)
    opaque = T.prepare_task(model, tok, toy_ds, max_length=256, cache=False, id_style="opaque", id_seed=5)
    assert opaque.gold == named.gold and opaque.node_ids == named.node_ids
    for prompt, target in zip(opaque.encoded.prompts, opaque.encoded.targets):
        assert "AQ" not in prompt and "GW" not in target and "AQ" not in target
    # parsing maps the spelled ids back to the data set's ids: the gold targets round-trip
    assert [frozenset(opaque.parse(t)) for t in opaque.encoded.targets] == opaque.gold
    # named ids: a sensor's gateway and service, and a gateway's service, are copyable; fog links are not
    topo = toy_ds.topology
    for gold, copy in zip(named.gold, named.copyable):
        for r in gold:
            fog = topo.nodes[r.head].kind == "gateway" and r.type == "CONNECTED_TO"
            assert (r in copy) == (not fog)
    # opaque ids: no prompt names a service, so only a sensor's gateway stays copyable
    for gold, copy in zip(opaque.gold, opaque.copyable):
        assert copy == {r for r in gold if topo.nodes[r.head].kind == "sensor" and r.type == "CONNECTED_TO"}
    with pytest.raises(T.TrainingError, match="id_style = 'hashed'"):
        T.prepare_task(model, tok, toy_ds, max_length=256, cache=False, id_style="hashed")


def test_evaluate_splits_accuracy_into_copyable_and_inferred(trained, toy_ds):
    model, task = trained[:2]
    rows = list(range(len(task.node_ids)))
    sc = T.evaluate(model, task, rows)
    gold = sum(len(task.gold[r]) for r in rows)
    copy = sum(len(task.copyable[r]) for r in rows)
    assert sc["copyable_share"] == pytest.approx(copy / gold)
    assert sc["accuracy"] == pytest.approx(sc["copyable_share"] * sc["accuracy_copyable"]
                                           + (1 - sc["copyable_share"]) * sc["accuracy_inferred"])


def test_compute_dtype_auto_is_float32_without_native_bfloat16(monkeypatch):
    from gentwin import llm

    assert llm.resolve_compute_dtype("auto", "cpu") == ("bfloat16" if llm.native_bf16("cpu") else "float32")
    monkeypatch.setattr(llm, "native_bf16", lambda device="cpu", cpu_flags=None: False)
    assert llm.resolve_compute_dtype("auto", "cpu") == "float32"
    monkeypatch.setattr(llm, "native_bf16", lambda device="cpu", cpu_flags=None: True)
    assert llm.resolve_compute_dtype("auto", "cpu") == "bfloat16"
    with pytest.raises(BackboneError, match="compute_dtype = 'half'"):
        llm.resolve_compute_dtype("half")
