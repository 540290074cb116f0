"""gentwin.config: one source of truth, validated on every construction."""

from __future__ import annotations

import dataclasses
import math

import pytest

from gentwin import config
from gentwin.config import ConfigError, resolve


def test_paper_profile_holds_table_iii() -> None:
    s = resolve("paper")
    assert (s.topology.n_services, s.topology.n_sensors, s.topology.n_gateways) == (3, 250, 50)
    assert (s.training.learning_rate, s.training.discount_factor) == (0.08, 0.99)
    assert s.training.batch_sizes == (32, 128, 256)
    assert s.stats.confidence == 0.95
    assert s.topology.split == (0.70, 0.15, 0.15)
    assert s.topology.n_instances == 1000


def test_quick_profile_is_smaller_everywhere_it_matters() -> None:
    q, p = resolve("quick"), resolve("paper")
    assert q.topology.n_sensors < p.topology.n_sensors
    assert q.training.epochs < p.training.epochs
    assert q.training.rounds < p.training.rounds


def test_overrides_go_to_their_section_and_none_keeps_the_profile() -> None:
    s = resolve("paper", n_sensors=30, band="paper", epochs=None)
    assert s.topology.n_sensors == 30
    assert s.pooling.band == "paper"
    assert s.training.epochs == resolve("paper").training.epochs
    # the profile itself is untouched (frozen settings, no hidden state)
    assert config.PROFILES["paper"].topology.n_sensors == 250


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("n_sensors", -5, "n_sensors = -5: must be >= 1"),
        ("n_sensors", 2.5, "n_sensors = 2.5: must be an integer"),
        ("n_sensors", True, "n_sensors = True: must be an integer"),
        ("learning_rate", math.nan, "learning_rate = nan: must be a finite number"),
        ("learning_rate", 0.0, "learning_rate = 0.0: must be > 0.0"),
        ("band", "wide", "band = 'wide': must be one of 'corrected', 'paper'"),
        ("split", (0.5, 0.3, 0.3), "split = (0.5, 0.3, 0.3): fractions must add up to 1"),
        ("split", (0.5, 0.5), "must have three fractions"),
        ("n_services", 4, "n_services = 4: must be <= 3"),
        ("outage_s", 1000.0, "outage_s = 1000.0: the cut"),
    ],
)
def test_bad_values_name_the_parameter_and_value(name, value, message) -> None:
    with pytest.raises(ConfigError) as err:
        resolve("paper", **{name: value})
    assert message in str(err.value)


def test_unknown_names_and_profiles_are_rejected() -> None:
    with pytest.raises(ConfigError, match="unknown parameter 'no_such_parameter'"):
        resolve("paper", no_such_parameter=1)
    with pytest.raises(ConfigError, match="profile = 'huge'"):
        resolve("huge")


def test_field_names_are_unique_and_all_documented() -> None:
    names = config.field_names()
    assert len(names) == len(set(names))
    for name in names:
        spec = config.field_spec(name)
        assert spec.help, name
        # every default is valid for its own bounds (constructing the profile proves it too)
        assert spec.section in ("topology", "pooling", "training", "twin", "physical", "stats")


@pytest.mark.parametrize(
    "name, text, expected",
    [("n_sensors", "30", 30), ("learning_rate", "1e-3", 0.001), ("band", "paper", "paper"),
     ("update_rates", "0.2,0.6", (0.2, 0.6)), ("sizes", "(30, 100)", (30, 100))],
)
def test_coerce_turns_command_line_text_into_the_declared_type(name, text, expected) -> None:
    assert config.coerce(name, text) == expected


def test_coerce_rejects_text_of_the_wrong_type() -> None:
    with pytest.raises(ConfigError, match="n_sensors = 'abc': must be an integer"):
        config.coerce("n_sensors", "abc")


def test_settings_are_frozen() -> None:
    s = resolve("paper")
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.topology.n_sensors = 1  # type: ignore[misc]


def test_table_iii_reads_our_values_from_the_settings() -> None:
    s = resolve("paper", n_sensors=30, learning_rate=0.01)
    table = config.table_iii(s).set_index("name")
    assert table.loc["n_sensors", "this run"] == 30
    assert table.loc["learning_rate", "this run"] == 0.01
    # the paper column is the paper's Table III, whatever this run uses
    assert table.loc["n_sensors", "paper"] == config.field_spec("n_sensors").paper
    assert list(table.index) == ["n_services", "n_sensors", "n_gateways", "learning_rate", "discount_factor",
                                 "batch_sizes", "confidence"]


def test_select_device() -> None:
    assert config.select_device("cpu") == "cpu"
    with pytest.raises(ConfigError, match="device = 'tpu'"):
        config.select_device("tpu")
