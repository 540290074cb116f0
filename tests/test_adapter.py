"""Tests of gentwin.adapter (eq. (8), injection, freezing, save/load) and of the LoRA baseline in benchmarks/."""

from __future__ import annotations

import importlib.util
import json
import pathlib
import sys

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from gentwin.adapter import (
    ADAPTER_CONFIG_NAME,
    ADAPTER_WEIGHTS_NAME,
    AdaptedMLP,
    AdapterError,
    TwinAdapter,
    TwinAdapterConfig,
    adapter_layer_indices,
    adapter_modules,
    adapter_parameter_count,
    adapter_state_dict,
    add_twin_adapters,
    load_adapter,
    parameter_breakdown,
    parameter_budget,
    parameters_per_layer,
    save_adapter,
)
from gentwin.config import resolve
from gentwin.llm import count_parameters, tiny_backbone

# the LoRA baseline is a benchmark's, not the library's: load it from its file
_spec = importlib.util.spec_from_file_location(
    "lora_budget", pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "lora_budget.py")
lora_budget = sys.modules.setdefault("lora_budget", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(lora_budget)

TEXT = ["(AQ-S001, CONNECTED_TO, AQ-GW01)", "(AQ-GW01, SERVES_IN, AQ) and more"]


@pytest.fixture
def tiny():
    return tiny_backbone(seed=0)  # hidden 64, 3 layers, vocab 100


def batch(tok):
    return tok(TEXT, return_tensors="pt", padding=True)


def logits(model, enc):
    with torch.no_grad():
        return model(**enc).logits


def randomise_adapters(model, seed=1):
    """Give W_U (and W_D) non-zero values so the adapters change the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for adapter in adapter_modules(model).values():
            for p in adapter.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


# --- the config ---------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value",
    [
        ("bottleneck", 0),
        ("bottleneck", 2.5),
        ("n_top", 0),
        ("layers", ()),
        ("layers", (1, 1)),
        ("layers", "12"),
        ("layers", (1.0,)),
        ("dropout", 1.0),
        ("dropout", -0.1),
        ("init_scale", 0.0),
        ("init_scale", float("nan")),
        ("bias", "yes"),
        ("seed", -1),
    ],
)
def test_config_errors_name_field_and_value(field, value):
    with pytest.raises(AdapterError) as err:
        TwinAdapterConfig(**{field: value})
    assert str(err.value).startswith(f"{field} = {value!r}:")


def test_config_round_trips_through_dict_and_json():
    cfg = TwinAdapterConfig(bottleneck=8, layers=[2, 0], dropout=0.1, bias=True, seed=4)
    assert cfg.layers == (0, 2)
    assert TwinAdapterConfig.from_dict(cfg.to_dict()) == cfg
    assert TwinAdapterConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_config_from_dict_rejects_unknown_fields():
    with pytest.raises(AdapterError, match=r"unknown fields \['rank'\]"):
        TwinAdapterConfig.from_dict({"bottleneck": 4, "rank": 8})


def test_config_from_settings_uses_gentwin_config():
    s = resolve("quick", bottleneck=12, adapter_layers=3)
    cfg = TwinAdapterConfig.from_settings(s)
    assert (cfg.bottleneck, cfg.n_top, cfg.layers) == (12, 3, None)


def test_resolve_layers_top_negative_and_out_of_range():
    assert TwinAdapterConfig(n_top=2).resolve_layers(30) == (28, 29)
    assert TwinAdapterConfig(layers=(-1, 0)).resolve_layers(3) == (0, 2)
    with pytest.raises(AdapterError, match="n_top = 4: the backbone has only 3"):
        TwinAdapterConfig(n_top=4).resolve_layers(3)
    with pytest.raises(AdapterError, match=r"layers = \(5,\): index 5 is outside"):
        TwinAdapterConfig(layers=(5,)).resolve_layers(3)
    with pytest.raises(AdapterError, match="name the same layer"):
        TwinAdapterConfig(layers=(-1, 2)).resolve_layers(3)


# --- eq. (8) ------------------------------------------------------------------


def eq8_adapter(w_down, w_up, b_down=None, b_up=None) -> TwinAdapter:
    """A TwinAdapter holding the given W_D (k x l) and W_U (l x k), in the paper's orientation."""
    a = TwinAdapter(hidden_size=w_down.shape[0], bottleneck=w_down.shape[1], bias=b_down is not None)
    with torch.no_grad():
        a.down.weight.copy_(w_down.T)
        a.up.weight.copy_(w_up.T)
        if b_down is not None:
            a.down.bias.copy_(b_down)
            a.up.bias.copy_(b_up)
    return a


def test_eq8_by_hand():
    # W_D (2x2), W_U (2x2); h = (1, 2):
    # h W_D = (1*1 + 2*0, 1*(-1) + 2*1) = (1, 1) -> ReLU (1, 1) -> (1, 1) W_U = (1*2 + 1*0, 1*0 + 1*(-3)) = (2, -3)
    # h' = (1 + 2, 2 - 3) = (3, -1).  h = (2, -1): h W_D = (2, -3) -> ReLU (2, 0) -> (4, 0) -> h' = (6, -1).
    w_down = torch.tensor([[1.0, -1.0], [0.0, 1.0]])
    w_up = torch.tensor([[2.0, 0.0], [0.0, -3.0]])
    h = torch.tensor([[1.0, 2.0], [2.0, -1.0]])
    with torch.no_grad():
        assert torch.equal(eq8_adapter(w_down, w_up)(h), torch.tensor([[3.0, -1.0], [6.0, -1.0]]))
        # with biases b_D = (-1, 0), b_U = (0.5, 0.5): first row: (0, 1) -> (0, -3) -> (1.5, -0.5)
        out = eq8_adapter(w_down, w_up, torch.tensor([-1.0, 0.0]), torch.tensor([0.5, 0.5]))(h[:1])
    assert torch.equal(out, torch.tensor([[1.5, -0.5]]))


def test_module_equals_eq8_with_its_own_weights():
    g = torch.Generator().manual_seed(0)
    a = TwinAdapter(hidden_size=6, bottleneck=3, bias=True, generator=g)
    with torch.no_grad():
        a.up.weight.copy_(torch.randn(6, 3, generator=g))
        a.up.bias.copy_(torch.randn(6, generator=g))
        a.down.bias.copy_(torch.randn(3, generator=g))
    h = torch.randn(2, 5, 6, generator=g)
    expected = h + torch.relu(h @ a.W_D + a.down.bias) @ a.W_U + a.up.bias  # eq. (8), row vectors
    torch.testing.assert_close(a(h), expected, rtol=0, atol=1e-6)
    assert tuple(a.W_D.shape) == (6, 3) and tuple(a.W_U.shape) == (3, 6)
    assert tuple(a.down.weight.shape) == (3, 6)  # PyTorch stores W_D transposed


def test_adapter_is_identity_at_start_and_keeps_shape():
    a = TwinAdapter(hidden_size=16, bottleneck=4, generator=torch.Generator().manual_seed(0))
    h = torch.randn(2, 7, 16)
    out = a(h)
    assert out.shape == h.shape
    assert torch.equal(out, h)
    assert float(a.down.weight.detach().abs().sum()) > 0  # W_D is not zero, only W_U is


# --- injection and freezing ---------------------------------------------------


def test_adapters_sit_after_the_mlp_of_the_top_layers(tiny):
    model, tok = tiny
    add_twin_adapters(model, TwinAdapterConfig(bottleneck=8, n_top=2))
    assert adapter_layer_indices(model) == [1, 2]
    assert not isinstance(model.model.layers[0].mlp, AdaptedMLP)
    randomise_adapters(model)
    layer = model.model.layers[2]
    x = torch.randn(2, 5, 64)
    with torch.no_grad():
        assert torch.equal(layer.mlp(x), layer.mlp.twin_adapter(layer.mlp.base_layer(x)))
    assert model.twin_adapter_config.layers == (1, 2)


def test_output_shapes_unchanged(tiny):
    model, tok = tiny
    enc = batch(tok)
    before = logits(model, enc)
    add_twin_adapters(model, TwinAdapterConfig(bottleneck=8, layers=(0, 2)))
    randomise_adapters(model)
    after = logits(model, enc)
    assert after.shape == before.shape == (2, enc["input_ids"].shape[1], 100)
    assert not torch.equal(after, before)


def test_zero_initialised_adapter_returns_backbone_logits_exactly(tiny):
    model, tok = tiny
    enc = batch(tok)
    before = logits(model, enc)
    add_twin_adapters(model, TwinAdapterConfig(bottleneck=8, n_top=3, seed=5))
    assert torch.equal(logits(model, enc), before)


def test_zero_init_exact_for_a_bfloat16_backbone(tiny):
    model, tok = tiny
    model.to(torch.bfloat16)
    enc = batch(tok)
    before = logits(model, enc)
    add_twin_adapters(model, TwinAdapterConfig(bottleneck=8))
    adapter = adapter_modules(model)[2]
    assert adapter.down.weight.dtype == torch.float32  # adapters train in float32
    after = logits(model, enc)
    assert after.dtype == torch.bfloat16 and torch.equal(after, before)


def test_only_adapter_parameters_get_gradients(tiny):
    model, tok = tiny
    add_twin_adapters(model, TwinAdapterConfig(bottleneck=8, n_top=2))
    randomise_adapters(model)  # non-zero W_U so W_D gets a non-zero gradient too
    model.train()
    enc = batch(tok)
    out = model(**enc, labels=enc["input_ids"])
    out.loss.backward()
    adapter_ids = {id(p) for a in adapter_modules(model).values() for p in a.parameters()}
    for name, p in model.named_parameters():
        if id(p) in adapter_ids:
            assert p.requires_grad and p.grad is not None and float(p.grad.abs().sum()) > 0, name
        else:
            assert not p.requires_grad and p.grad is None, name


def test_trainable_counts_by_hand(tiny):
    model, _ = tiny
    total = count_parameters(model)["total"]
    cfg = TwinAdapterConfig(bottleneck=8, n_top=2, bias=True)
    add_twin_adapters(model, cfg)
    per_layer = 2 * 64 * 8 + 8 + 64
    counts = count_parameters(model)
    assert counts == {"total": total + 2 * per_layer, "frozen": total, "trainable": 2 * per_layer}
    assert adapter_parameter_count(cfg, hidden_size=64, num_layers=3) == 2 * per_layer


def test_a_few_steps_lower_the_loss(tiny):
    model, tok = tiny
    add_twin_adapters(model, TwinAdapterConfig(bottleneck=16, n_top=2))
    enc = batch(tok)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-2)
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = model(**enc, labels=enc["input_ids"]).loss
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]


def test_parameter_breakdown_adds_up_and_places_adapters(tiny):
    model, _ = tiny
    add_twin_adapters(model, TwinAdapterConfig(bottleneck=8, n_top=1))
    table = parameter_breakdown(model)
    counts = count_parameters(model)
    assert int(table["frozen"].sum()) == counts["frozen"]
    assert int(table["trainable"].sum()) == counts["trainable"] == 2 * 64 * 8
    tunable = table[table["trainable"] > 0]
    assert list(zip(tunable["part"], tunable["block"])) == [("layer 2", "Twin Adapter")]
    row = table[(table["part"] == "layer 0") & (table["block"] == "feed-forward")]
    assert int(row["frozen"].iloc[0]) == 3 * 64 * 128  # gate, up, down of the tiny MLP
    assert int(table.loc[table["part"] == "embeddings", "frozen"].iloc[0]) == 100 * 64  # tied head counted once


def test_parameters_per_layer_by_hand(tiny):
    model, _ = tiny
    add_twin_adapters(model, TwinAdapterConfig(bottleneck=8, n_top=1))
    table = parameters_per_layer(model)
    # a tiny layer: attention q 64x64 + k, v 64x32 + o 64x64 = 12288, MLP 3 x 64 x 128 = 24576, two norms 128
    backbone = 12288 + 24576 + 128
    assert list(table.itertuples(index=False, name=None)) == [
        (0, "frozen backbone", backbone), (1, "frozen backbone", backbone), (2, "Twin Adapter", 2 * 64 * 8),
        (2, "frozen backbone", backbone)]


def test_parameter_budget_by_hand(tiny):
    model, _ = tiny
    with pytest.raises(AdapterError, match="has no Twin Adapters"):
        parameter_budget(model)
    add_twin_adapters(model, TwinAdapterConfig(bottleneck=8, n_top=2))
    budget = parameter_budget(model)
    # frozen: embeddings 100 x 64 (tied head counted once) + 3 layers x 36992 + final norm 64 = 117440
    # tunable: 2 layers x 2 x 64 x 8 = 2048; LoRA per rank: 2 layers x (128 + 96 + 96 + 128) = 896,
    # rank round(2048 / 896) = round(2.29) = 2 -> 1792
    assert budget["parameters"].tolist() == [117_440, 2048, 119_488, 1792]
    assert budget.index.tolist() == ["frozen (backbone)", "tunable (Twin Adapters, l = 8, 2 layers)", "total",
                                     "LoRA baseline with the same budget (rank 2 on q_proj, k_proj, v_proj, o_proj)"]
    assert budget["share of all"].tolist() == pytest.approx([117_440 / 119_488, 2048 / 119_488, 1.0, 1792 / 119_488])
    assert budget.index.name == "part"
    # the counts are transformers' own (gentwin.llm.count_parameters)
    counts = count_parameters(model)
    assert budget["parameters"].iloc[:3].tolist() == [counts["frozen"], counts["trainable"], counts["total"]]
    with pytest.raises(AdapterError, match=r"lora_targets = \('wq',\)"):
        parameter_budget(model, lora_targets=("wq",))
    # one target missing is an error too, not a rank worked out from the others
    missing = r"lora_targets = \('q_proj', 'wq'\): layer 1 has no linear module named \['wq'\]"
    with pytest.raises(AdapterError, match=missing):
        parameter_budget(model, lora_targets=("q_proj", "wq"))


def test_adding_twice_is_an_error(tiny):
    model, _ = tiny
    add_twin_adapters(model, TwinAdapterConfig(bottleneck=4))
    with pytest.raises(AdapterError, match=r"already has Twin Adapters on layers \[1, 2\]"):
        add_twin_adapters(model, TwinAdapterConfig(bottleneck=4))


def test_unsupported_architecture_fails_clearly():
    gpt2 = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=50, n_positions=32))
    with pytest.raises(AdapterError, match="model = GPT2LMHeadModel: unsupported architecture"):
        add_twin_adapters(gpt2, TwinAdapterConfig(bottleneck=4))


def test_config_type_is_checked(tiny):
    model, _ = tiny
    with pytest.raises(AdapterError, match="config = .*must be a TwinAdapterConfig"):
        add_twin_adapters(model, {"bottleneck": 4})


# --- save and load ------------------------------------------------------------


def test_save_load_round_trip_reproduces_logits_exactly(tiny, tmp_path):
    model, tok = tiny
    add_twin_adapters(model, TwinAdapterConfig(bottleneck=8, layers=(0, 2), bias=True))
    randomise_adapters(model)
    enc = batch(tok)
    trained = logits(model, enc)
    save_adapter(model, tmp_path / "twin")
    assert sorted(p.name for p in (tmp_path / "twin").iterdir()) == [ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME]
    meta = json.loads((tmp_path / "twin" / ADAPTER_CONFIG_NAME).read_text())
    assert meta["config"]["layers"] == [0, 2] and meta["backbone"]["hidden_size"] == 64

    fresh, _ = tiny_backbone(seed=0)
    assert load_adapter(fresh, tmp_path / "twin") is fresh
    assert adapter_layer_indices(fresh) == [0, 2]
    assert torch.equal(logits(fresh, enc), trained)
    for key, value in adapter_state_dict(model).items():
        assert torch.equal(adapter_state_dict(fresh)[key], value)
    assert count_parameters(fresh) == count_parameters(model)


def test_save_overwrites_an_existing_folder_and_load_into_existing_adapters(tiny, tmp_path):
    model, tok = tiny
    add_twin_adapters(model, TwinAdapterConfig(bottleneck=4))
    save_adapter(model, tmp_path)  # existing folder
    randomise_adapters(model, seed=7)
    save_adapter(model, tmp_path)
    other, _ = tiny_backbone(seed=0)
    add_twin_adapters(other, TwinAdapterConfig(bottleneck=4))
    load_adapter(other, tmp_path)
    enc = batch(tok)
    assert torch.equal(logits(other, enc), logits(model, enc))


def test_save_without_adapters_is_an_error(tiny, tmp_path):
    model, _ = tiny
    with pytest.raises(AdapterError, match="has no Twin Adapters to save"):
        save_adapter(model, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_load_checks_are_strict(tiny, tmp_path):
    model, _ = tiny
    add_twin_adapters(model, TwinAdapterConfig(bottleneck=4))
    save_adapter(model, tmp_path / "a")

    with pytest.raises(AdapterError, match="no such folder"):
        load_adapter(tiny_backbone()[0], tmp_path / "missing")

    wider, _ = tiny_backbone(hidden_size=32, num_heads=2, num_kv_heads=1)
    with pytest.raises(AdapterError, match="hidden_size = 64.*this model has hidden_size = 32"):
        load_adapter(wider, tmp_path / "a")

    deeper, _ = tiny_backbone(num_layers=4)
    with pytest.raises(AdapterError, match="num_hidden_layers = 3"):
        load_adapter(deeper, tmp_path / "a")

    other, _ = tiny_backbone()
    add_twin_adapters(other, TwinAdapterConfig(bottleneck=8))
    with pytest.raises(AdapterError, match="bottleneck 4, but the model already has adapters on"):
        load_adapter(other, tmp_path / "a")

    weights = tmp_path / "a" / ADAPTER_WEIGHTS_NAME
    weights.write_bytes(weights.read_bytes()[:-4] + b"\1\2\3\4")  # W_U is zero there: a real change
    with pytest.raises(AdapterError, match="SHA-256 does not match"):
        load_adapter(tiny_backbone()[0], tmp_path / "a")


def test_load_rejects_foreign_json(tiny, tmp_path):
    model, _ = tiny
    add_twin_adapters(model, TwinAdapterConfig(bottleneck=4))
    save_adapter(model, tmp_path)
    cfg_path = tmp_path / ADAPTER_CONFIG_NAME
    meta = json.loads(cfg_path.read_text())
    meta["adapter_type"] = "LORA"
    cfg_path.write_text(json.dumps(meta))
    with pytest.raises(AdapterError, match="adapter_type = 'LORA'"):
        load_adapter(tiny_backbone()[0], tmp_path)


# --- the LoRA baseline --------------------------------------------------------


def smollm2_shaped_model():
    """SmolLM2-135M's shapes on the meta device: no weights, no memory, no file."""
    cfg = LlamaConfig(
        vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
        num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True,
    )
    with torch.device("meta"):
        return LlamaForCausalLM(cfg)


def test_lora_plan_matches_adapter_count_at_smollm2_shapes():
    model = smollm2_shaped_model()
    cfg = TwinAdapterConfig(bottleneck=64, n_top=2)
    target = adapter_parameter_count(cfg, hidden_size=576, num_layers=30)
    assert target == 2 * 2 * 576 * 64 == 147_456
    plan = lora_budget.plan_lora(model, target, n_top=2)
    # per rank and layer: q 576+576, k 576+192, v 576+192, o 576+576 = 3840; two layers: 7680
    assert plan.per_rank == 7680 and plan.layers == (28, 29)
    assert plan.rank == 19 and plan.trainable == 145_920  # round(147456 / 7680) = 19
    assert abs(plan.relative_difference) < 0.03


def test_lora_baseline_trains_the_planned_count_on_the_same_layers(tiny):
    model, tok = tiny
    enc = batch(tok)
    before = logits(model, enc)
    cfg = TwinAdapterConfig(bottleneck=7, n_top=2)
    target = adapter_parameter_count(cfg, hidden_size=64, num_layers=3)  # 2 * 2 * 64 * 7 = 1792 = 2 * 896
    lora = lora_budget.lora_baseline(model, target, n_top=2)
    assert count_parameters(lora)["trainable"] == target
    names = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert names and all(".layers.1." in n or ".layers.2." in n for n in names)
    assert all("lora_" in n for n in names)
    assert torch.equal(logits(lora, enc), before)  # LoRA's B starts at zero


def test_lora_plan_errors_name_the_argument(tiny):
    model, _ = tiny
    with pytest.raises(ValueError, match="target_trainable = 0"):
        lora_budget.plan_lora(model, 0)
    with pytest.raises(ValueError, match=r"target_modules = \('wq',\).*has no linear module named \['wq'\]"):
        lora_budget.plan_lora(model, 100, target_modules=("wq",))
    add_twin_adapters(model, TwinAdapterConfig(bottleneck=4))
    with pytest.raises(ValueError, match="LoRA baseline needs a freshly loaded backbone"):
        lora_budget.lora_baseline(model, 100)
