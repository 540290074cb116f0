"""gentwin.config: profiles, overrides, validation, coercion and Table III."""

from __future__ import annotations

import dataclasses
import math

import pytest

from gentwin import config
from gentwin.config import ConfigError, PROFILES, coerce, field_spec, resolve, table_iii


# ---------------------------------------------------------------------------
# Profiles
# ---------------------------------------------------------------------------


def test_paper_profile_holds_table_iii_and_the_data_set_shape():
    s = resolve("paper")
    assert s.profile == "paper"
    assert (s.topology.n_services, s.topology.n_sensors, s.topology.n_gateways) == (3, 250, 50)
    assert (s.training.learning_rate, s.training.discount_factor) == (0.08, 0.99)
    assert s.training.batch_sizes == (32, 128, 256)
    assert s.stats.confidence == 0.95
    assert s.topology.n_instances == 1000
    assert s.topology.split == (0.70, 0.15, 0.15)


def test_quick_profile_is_smaller_and_still_valid():
    quick, paper = resolve("quick"), resolve("paper")
    assert quick.profile == "quick"
    assert quick.topology.n_sensors < paper.topology.n_sensors
    assert quick.topology.n_instances < paper.topology.n_instances
    assert quick.training.epochs < paper.training.epochs
    # the quick profile passes the same validation as any override
    assert resolve("quick", n_sensors=quick.topology.n_sensors) == quick


def test_every_profile_field_is_indexed_once():
    names = config.field_names()
    assert len(names) == len(set(names))
    flat = PROFILES["paper"].flat()
    assert set(flat) == set(names)


# ---------------------------------------------------------------------------
# resolve / overrides
# ---------------------------------------------------------------------------


def test_override_changes_only_that_field():
    base = resolve("paper")
    s = resolve("paper", n_sensors=30)
    assert s.topology.n_sensors == 30
    assert dataclasses.replace(s.topology, n_sensors=250) == base.topology
    assert s.training == base.training and s.physical == base.physical


def test_none_keeps_the_profile_value():
    assert resolve("quick", n_sensors=None, learning_rate=None) == resolve("quick")


def test_overrides_do_not_touch_the_profiles():
    before = PROFILES["paper"]
    resolve("paper", n_sensors=30, learning_rate=0.01)
    assert PROFILES["paper"] is before
    assert PROFILES["paper"].topology.n_sensors == 250


def test_settings_replace_validates_like_resolve():
    s = resolve("paper").replace(n_gateways=4, n_gateway_links=1)
    assert s.topology.n_gateways == 4
    with pytest.raises(ConfigError, match="n_gateways = -1"):
        resolve("paper").replace(n_gateways=-1)


def test_unknown_profile_is_named():
    with pytest.raises(ConfigError, match=r"profile = 'huge'.*'paper'"):
        resolve("huge")


def test_unknown_parameter_is_named_and_known_ones_listed():
    with pytest.raises(ConfigError) as err:
        resolve("paper", no_such_parameter=1)
    assert "no_such_parameter" in str(err.value)
    assert "n_sensors" in str(err.value)


# ---------------------------------------------------------------------------
# Bad values: every message names the field and the value
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, value, reason",
    [
        ("n_sensors", -5, ">= 1"),
        ("n_services", 4, "<= 3"),
        ("n_services", 0, ">= 1"),
        ("n_sensors", 0, ">= 1"),
        ("n_gateway_links", -1, ">= 0"),
        ("learning_rate", -0.1, "> 0.0"),
        ("learning_rate", 0.0, "> 0.0"),
        ("learning_rate", math.nan, "finite"),
        ("learning_rate", math.inf, "finite"),
        ("discount_factor", 1.5, "<= 1.0"),
        ("p_inactive", 1.0, "< 1.0"),
        ("confidence", 1.0, "< 1.0"),
        ("n_sensors", 2.5, "integer"),
        ("n_sensors", True, "integer"),
        ("n_sensors", "30", "integer"),
        ("learning_rate", "fast", "number"),
        ("band", "middle", "one of 'corrected', 'paper'"),
        ("store", "sqlite", "one of"),
        ("split", (0.5, 0.3, 0.1), "add up to 1"),
        ("split", (0.7, 0.3), "three fractions"),
        ("split", (1.2, -0.1, -0.1), "< 1.0"),
        ("batch_sizes", (), "non-empty"),
        ("batch_sizes", (32, 0), ">= 1"),
        ("update_rates", (0.2, 1.5), "<= 1.0"),
    ],
)
def test_bad_value_is_rejected_naming_field_and_value(name, value, reason):
    with pytest.raises(ConfigError) as err:
        resolve("paper", **{name: value})
    message = str(err.value)
    assert message.startswith(f"{name} = ")
    # a list is reported by its offending element
    shown = [repr(value)] + ([repr(v) for v in value] if isinstance(value, tuple) else [])
    assert any(f"{name} = {text}" in message for text in shown)
    assert reason in message


def test_split_message_shows_the_whole_split():
    with pytest.raises(ConfigError, match=r"split = \(0\.5, 0\.3, 0\.3\): fractions must add up to 1 \(they add up to 1\.1\)"):
        resolve("paper", split=(0.5, 0.3, 0.3))


def test_overrides_go_to_their_own_section():
    s = resolve("paper", band="paper", epochs=5, store="neo4j", outage_s=5.0)
    assert (s.pooling.band, s.training.epochs, s.twin.store, s.physical.outage_s) == ("paper", 5, "neo4j", 5.0)
    assert s.topology == resolve("paper").topology


def test_gateways_fewer_than_services_is_rejected():
    with pytest.raises(ConfigError, match=r"n_gateways = 2: must be >= n_services = 3"):
        resolve("paper", n_gateways=2)


def test_too_few_instances_for_the_nodes_is_rejected():
    # 250 sensors + 50 gateways = 300 device nodes must each appear in the log
    with pytest.raises(ConfigError, match=r"n_instances = 299: .*300"):
        resolve("paper", n_instances=299)
    # per split: nodes 250 sensors -> 175/38/37 and 50 gateways -> 35/8/7, i.e. 210/46/44; 300 instances
    # split 210/45/45 leave a validation node without an instance, 303 split 212/46/45 do not
    with pytest.raises(ConfigError, match=r"n_instances = 300: the validation split has 46 nodes but only 45"):
        resolve("paper", n_instances=300)
    assert resolve("paper", n_instances=303).topology.n_instances == 303


def test_outage_past_the_end_of_the_run_is_rejected():
    d = PROFILES["paper"].physical.duration_s
    start = PROFILES["paper"].physical.outage_start_s
    with pytest.raises(ConfigError, match=r"outage_s = .*duration_s"):
        resolve("paper", outage_s=d - start + 1.0)
    ok = resolve("paper", outage_s=d - start)  # ends exactly at the end of the run
    assert ok.physical.outage_s == d - start


# ---------------------------------------------------------------------------
# coerce: command-line strings to declared types
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, text, expected",
    [
        ("n_sensors", "30", 30),
        ("n_sensors", "-5", -5),  # coerced; the range check is resolve's job
        ("learning_rate", "0.08", 0.08),
        ("learning_rate", "1e-3", 0.001),
        ("band", "paper", "paper"),
        ("update_rates", "0.2,0.6", (0.2, 0.6)),
        ("update_rates", "[0.2, 0.6]", (0.2, 0.6)),
        ("batch_sizes", "32", (32,)),
        ("split", "0.8,0.1,0.1", (0.8, 0.1, 0.1)),
        ("sizes", "(30, 100)", (30, 100)),
    ],
)
def test_coerce_gives_the_declared_type(name, text, expected):
    value = coerce(name, text)
    assert value == expected
    assert type(value) is type(expected)


def test_coerce_nan_is_a_float_that_resolve_rejects():
    value = coerce("learning_rate", "nan")
    assert math.isnan(value)
    with pytest.raises(ConfigError, match="learning_rate = nan"):
        resolve("paper", learning_rate=value)


@pytest.mark.parametrize(
    "name, text", [("n_sensors", "abc"), ("n_sensors", "2.5"), ("learning_rate", "fast"), ("batch_sizes", "32,x")]
)
def test_coerce_rejects_text_naming_field_and_value(name, text):
    with pytest.raises(ConfigError) as err:
        coerce(name, text)
    assert str(err.value).startswith(f"{name} = ")
    assert "must be" in str(err.value)


def test_coerce_unknown_name():
    with pytest.raises(ConfigError, match="unknown parameter 'nope'"):
        coerce("nope", "1")


# ---------------------------------------------------------------------------
# Field documentation
# ---------------------------------------------------------------------------


def test_field_spec_documents_bounds_and_paper_value():
    spec = field_spec("n_sensors")
    assert spec.section == "topology"
    assert spec.type is int
    assert spec.paper == "250"
    assert spec.describe_range() == ">= 1; <= 25000"
    assert field_spec("band").describe_range() == "one of 'corrected', 'paper'"
    assert field_spec("p_inactive").describe_range() == ">= 0.0; < 1.0"
    assert field_spec("question").describe_range() == "any"


def test_every_field_has_help_and_a_valid_default():
    for name in config.field_names():
        spec = field_spec(name)
        assert spec.help.strip(), name
        # the declared default passes the field's own validation
        resolve("paper", **{name: spec.default})


# ---------------------------------------------------------------------------
# Table III
# ---------------------------------------------------------------------------


def test_table_iii_reads_our_values_from_the_settings():
    s = resolve("paper", n_sensors=30, n_gateways=20, learning_rate=0.01, batch_sizes=(8, 16), confidence=0.9)
    table = table_iii(s).set_index("name")
    assert table.loc["n_sensors", "this run"] == s.topology.n_sensors
    assert table.loc["n_gateways", "this run"] == s.topology.n_gateways
    assert table.loc["n_services", "this run"] == s.topology.n_services
    assert table.loc["learning_rate", "this run"] == s.training.learning_rate
    assert table.loc["discount_factor", "this run"] == s.training.discount_factor
    assert table.loc["batch_sizes", "this run"] == "8, 16"
    assert table.loc["confidence", "this run"] == "90%"


def test_table_iii_paper_column_is_the_printed_table():
    table = table_iii().set_index("parameter")
    assert list(table.index) == [
        "Number of smart city services",
        "Number of IoT sensors",
        "Number of gateways",
        "Learning rate",
        "Discount factor",
        "Batch size",
        "Confidence interval",
    ]
    assert list(table["paper"]) == ["{2, 3}", "250", "50", "0.08", "0.99", "{32, 128, 256}", "95 %"]
    # and the paper column is the config's own record of it, not a second copy
    assert all(row.paper == field_spec(row.name).paper for row in table.itertuples())


def test_table_iii_defaults_to_the_paper_profile():
    assert table_iii().equals(table_iii(PROFILES["paper"]))


# ---------------------------------------------------------------------------
# Immutability and device
# ---------------------------------------------------------------------------


def test_settings_are_frozen():
    s = resolve("paper")
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.topology.n_sensors = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.profile = "quick"  # type: ignore[misc]
    assert hash(s.topology) == hash(resolve("paper").topology)


def test_sequence_defaults_must_be_tuples():
    with pytest.raises(TypeError, match="tuples"):
        config._p([1, 2], "a list default")


def test_select_device():
    assert config.select_device("cpu") == "cpu"
    with pytest.raises(ConfigError, match="device = 'tpu'"):
        config.select_device("tpu")


# ---------------------------------------------------------------------------
# Upper bounds on sizes and the generator's rules, checked before anything runs
# ---------------------------------------------------------------------------


SIZE_FIELDS = ["n_gateways", "n_sensors", "n_gateway_links", "n_instances", "pool_window", "pool_seeds",
               "batch_size", "batch_sizes", "epochs", "rounds", "bottleneck", "adapter_layers", "max_length",
               "n_seeds", "train_limit", "eval_batch_size", "qa_epochs", "demo_epochs", "n_episodes",
               "twin_seeds", "top_k", "n_questions", "sizes", "physical_seeds", "detect_slots", "duration_s"]


@pytest.mark.parametrize("name", SIZE_FIELDS)
def test_every_size_has_an_upper_bound_well_above_the_paper(name):
    spec = field_spec(name)
    assert spec.le is not None, name
    paper = PROFILES["paper"].flat()[name]
    largest = max(paper) if isinstance(paper, tuple) else paper
    assert spec.le >= 10 * max(largest, 1), (name, spec.le, largest)  # generous: a real study fits
    assert f"<= {spec.le}" in spec.describe_range()


def test_a_billion_sensors_is_rejected_naming_the_parameter():
    with pytest.raises(ConfigError, match=r"^n_sensors = 1000000000: must be <= 25000"):
        resolve("paper", n_sensors=1_000_000_000, n_instances=100_000)
    with pytest.raises(ConfigError, match=r"^sizes = 1000000000: must be <= 25000"):
        resolve("paper", sizes=(30, 1_000_000_000))


def test_reading_slots_of_a_simulated_run_are_bounded():
    with pytest.raises(ConfigError, match=r"^report_period_s = 1e-05: .*3e\+07 reading slots; at most 1000000"):
        resolve("paper", report_period_s=1e-5, presence_dwell_s=1e-5, slot_grace_s=0.0)


@pytest.mark.parametrize(
    "overrides, message",
    [
        # one sensor, one gateway, one service: the validation split gets no node
        (dict(n_services=1, n_gateways=1, n_sensors=1, n_gateway_links=0, n_instances=2),
         r"^split = \(0\.7, 0\.15, 0\.15\): the validation split gets no node with n_sensors = 1 and n_gateways = 1"),
        # 2 sensors + 1 gateway fill train and validation only
        (dict(n_services=1, n_gateways=1, n_sensors=2, n_gateway_links=0, n_instances=10),
         r"^split = .*: the validation split gets no node"),
        # 3 sensors -> 2/1/0 and 1 gateway -> 1/0/0: the test part is empty
        (dict(n_services=1, n_gateways=1, n_sensors=3, n_gateway_links=0, n_instances=10),
         r"^split = .*: the test split gets no node"),
        # one gateway per service: no pair of gateways of one service, so no fog link fits
        (dict(n_services=3, n_gateways=3, n_gateway_links=1),
         r"^n_gateway_links = 1: at most 0 fog links fit .*n_gateways = 3 over n_services = 3"),
        # 50 gateways over 3 services (17, 17, 16): 136 + 136 + 120 = 392 pairs
        (dict(n_gateway_links=393), r"^n_gateway_links = 393: at most 392 fog links"),
        # enough instances overall (>= 300 nodes) but the validation split's 45 nodes get only 45 of 300 * 0.15
        (dict(n_instances=303), None),
        (dict(n_instances=302), r"^n_instances = 302: the validation split has 46 nodes but only 45 instances"),
    ],
)
def test_cities_the_generator_cannot_build_are_rejected_up_front(overrides, message):
    from gentwin.topology import generate_dataset

    if message is None:  # a borderline city that is accepted is also generated
        settings = resolve("paper", **overrides)
        assert generate_dataset(settings.topology).counts()["instances"] == overrides["n_instances"]
        return
    with pytest.raises(ConfigError, match=message):
        resolve("paper", **overrides)


def test_generator_rules_match_the_generator_at_every_small_size():
    # the check accepts exactly the cities the generator builds (both directions can fail)
    from gentwin.topology import TopologyError, generate_dataset

    for services in (1, 2, 3):
        for gateways in range(services, 5):
            for sensors in (1, 2, 3, 4, 6):
                for links in (0, 1):
                    cfg = config.TopologyConfig(n_services=services, n_gateways=gateways, n_sensors=sensors,
                                                n_gateway_links=links, n_instances=12)
                    try:
                        config.check_generator_rules(cfg)
                        accepted = True
                    except ConfigError:
                        accepted = False
                    try:
                        generate_dataset(cfg)
                        built = True
                    except TopologyError:
                        built = False
                    assert accepted == built, (services, gateways, sensors, links)


def test_replace_checks_the_generator_rules_too():
    with pytest.raises(ConfigError, match="gets no node"):
        resolve("quick").replace(n_services=1, n_gateways=1, n_sensors=1, n_gateway_links=0)


def test_integer_fields_use_closed_bounds_only():
    # the integer check (gentwin.checks.check_int) knows >= and <= only
    for name in config.field_names():
        spec = field_spec(name)
        elem = spec.type.__args__[0] if getattr(spec.type, "__args__", None) else spec.type
        if elem is int:
            assert spec.gt is None and spec.lt is None, name


def test_messages_end_with_the_help_text():
    with pytest.raises(ConfigError, match=r"^learning_rate = 0\.0: must be > 0\.0 \(learning rate of the adapter optimiser\)$"):
        resolve("paper", learning_rate=0.0)
    with pytest.raises(ConfigError, match=r"^qa_feedback = 1: must be true or false \(Algorithm 1 line 14"):
        resolve("paper", qa_feedback=1)
    with pytest.raises(ConfigError, match=r"^question = 3: must be a string \(the Fig\. 4 question\)$"):
        resolve("paper", question=3)


def test_table4_sizes_the_generator_cannot_build_are_rejected():
    # quick: 3 services, so a size of s sensors gets max(3, round(s / 5)) = 3 gateways, one per service;
    # 3 sensors split 2/1/0 and 3 gateways 2/1/0 leave the test part empty
    with pytest.raises(ConfigError, match=r"^sizes = 3: the Table IV city of 3 sensors cannot be generated: "
                                          r"split = .*the test split gets no node"):
        resolve("quick", sizes=(3, 10))
    from gentwin.physical import topology_config_for
    from gentwin.topology import TopologyError, generate_dataset

    base = resolve("quick")
    for size in range(1, 13):  # accepted exactly when the generator builds it
        try:
            resolve("quick", sizes=(size,))
            accepted = True
        except ConfigError:
            accepted = False
        try:
            generate_dataset(topology_config_for(size, base.topology, base.physical))
            built = True
        except TopologyError:
            built = False
        assert accepted == built, size
