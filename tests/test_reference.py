"""Tests of gentwin.reference: every paper row states, before any run, how it is judged."""

from __future__ import annotations

import re

import pytest

from gentwin.config import field_names
from gentwin.reference import JUDGES, PAPER_VALUES, PaperValue, by_key

_PLAIN_NUMBER = re.compile(r"^~?(\d+)(?:\.(\d+))?(?: %)?$")


def test_every_row_states_its_rule_and_reason() -> None:
    for row in PAPER_VALUES:
        assert row.judge in JUDGES, row.key
        assert row.margin_reason.strip(), f"{row.key}: no reason for how it is judged"
        if row.judge in ("value", "effect"):
            assert row.paper is not None and row.margin is not None and row.margin > 0, row.key


def test_no_margin_is_tighter_than_the_papers_own_rounding() -> None:
    checked = 0
    for row in PAPER_VALUES:
        m = _PLAIN_NUMBER.match(row.paper_text)
        if row.judge not in ("value", "effect") or not m:
            continue
        decimals = len(m.group(2) or "")
        assert row.margin >= 0.5 * 10.0 ** -decimals - 1e-12, (row.key, row.paper_text, row.margin)
        checked += 1
    assert checked >= 8  # Table IV's six cells, the Fig. 6 gain and the Fig. 8 gaps at least


def test_absolute_times_and_shapes_are_not_comparable_and_inputs_are_set_by_input() -> None:
    for row in PAPER_VALUES:
        if row.unit == "ms":  # measured on the paper's hardware and store
            assert row.judge == "not comparable", row.key
        if row.paper is None and row.judge != "direction":  # a shape, not a number
            assert row.judge == "not comparable", row.key
    for key in ("dataset_instances", "dataset_device_nodes", "dataset_relations", "dataset_train_instances",
                "fig6_rounds", "fig7_epochs"):
        assert by_key(key).judge == "input", key


def test_direction_rows_name_the_value_they_judge() -> None:
    directions = {r.key: r for r in PAPER_VALUES if r.judge == "direction"}
    assert set(directions) == {"fig6_pooling_helps", "fig8_gap_widens"}
    assert directions["fig6_pooling_helps"].glue_key == "fig6_gain_pct"
    assert directions["fig8_gap_widens"].glue_key == "fig8_gap_widening_pct"
    assert by_key("fig6_gain_pct").glue_key == "fig6_gain_pct"  # a row without a source publishes under its key


def test_seed_fields_are_config_fields() -> None:
    names = set(field_names())
    for row in PAPER_VALUES:
        if row.judge in ("value", "effect", "direction"):
            assert row.seeds_field in names, row.key


def test_keys_are_unique_and_unknown_keys_are_named() -> None:
    keys = [r.key for r in PAPER_VALUES]
    assert len(keys) == len(set(keys))
    with pytest.raises(KeyError, match="'no_such'"):
        by_key("no_such")


def test_a_row_without_its_margin_or_with_an_unknown_rule_is_refused() -> None:
    with pytest.raises(ValueError, match="judge = 'maybe'"):
        PaperValue("x", "q", 1.0, "1", "", "w", "nb", "maybe")
    with pytest.raises(ValueError, match="margin = None"):
        PaperValue("x", "q", 1.0, "1", "", "w", "nb", "value")
    with pytest.raises(ValueError, match="margin = -1"):
        PaperValue("x", "q", 1.0, "1", "", "w", "nb", "effect", -1.0)
