"""The paper's reported numbers, as labelled reference values, each with the margin and rule it is judged by.

The only place the paper's *results* appear in the library: never defaults, inputs or test expectations, only
printed beside ours.  Each row names the glue key of our value (``key_low`` / ``key_high`` its 95 % CI, ``key_n``
its seeds) and states before any run how it is judged; :func:`gentwin.audit.comparison_status` applies the rule.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["JUDGES", "PaperValue", "PAPER_VALUES", "by_key"]

#: How a row is judged: "value" (our CI against paper ± margin), "effect" (a value that is a difference, so a CI
#: containing 0 cannot reproduce it), "direction" (only the sign of our CI counts), "input" (our construction fixes
#: it: set by input, not a result) and "not comparable" (other hardware, or the paper gives only a shape).
JUDGES: tuple[str, ...] = ("value", "effect", "direction", "input", "not comparable")


@dataclass(frozen=True)
class PaperValue:
    """One number (or claim) the paper reports, how it is judged, and where we publish ours."""

    key: str  #: the row's name; our value is glued under ``source`` (default: this key)
    quantity: str  #: what is measured
    paper: float | None  #: the paper's number (None for a shape or a direction)
    paper_text: str  #: the paper's number or claim as the paper states it
    unit: str
    where: str  #: where in the paper
    notebook: str  #: the notebook (stem) that computes ours
    judge: str = "value"  #: one of :data:`JUDGES`
    margin: float | None = None  #: δ: ours is "the same" when its CI lies inside paper ± δ
    margin_reason: str = ""  #: why δ (or why the row is judged as it is), stated before any run
    source: str | None = None  #: glue key of the value judged, when another row publishes it
    seeds_field: str | None = None  #: config field with the seed count, when the chapter glues no ``key_n``
    explanation: str = ""  #: why ours may differ, where that is known from the set-up rather than the run

    def __post_init__(self) -> None:
        if self.judge not in JUDGES:
            raise ValueError(f"judge = {self.judge!r} ({self.key}): must be one of {', '.join(map(repr, JUDGES))}")
        if self.judge in ("value", "effect") and (self.paper is None or self.margin is None or self.margin < 0):
            raise ValueError(f"margin = {self.margin!r} ({self.key}): a {self.judge} row needs the paper's number "
                             "and a margin >= 0")

    @property
    def glue_key(self) -> str:
        """The glue key our value is published under."""
        return self.source or self.key


_INPUT = "an input our generator or configuration is set to, chosen to match the paper: not a result"
_ROUNDED_1 = "the paper gives one decimal, so its own rounding is ± 0.05"
_CURVE = "read off a plotted curve that the paper describes in words; the plot resolves about ± 0.05"
_GAIN = ("the paper reports one run without an interval; rounding alone gives ± 0.5 points, and a gain within "
         "± 5 points (about a quarter of the effect) is taken as the same finding")
_GAP = ("a relative gap depends less on the hardware than the times do, but the stores differ (the paper's "
        "deployment against our in-process twin); rounding gives ± 0.5 points, ± 5 points is taken as the same")
_HARDWARE = "absolute time on the paper's hardware and graph store, which we do not have: not comparable"

PAPER_VALUES: tuple[PaperValue, ...] = (
    # Section III.B: the data set (inputs we generate to match; reported so the shape can be checked)
    PaperValue("dataset_instances", "instances in the data set", 1000, "1000", "", "III.B", "setup", "input",
               margin_reason=_INPUT),
    PaperValue("dataset_device_nodes", "nodes (sensors + gateways)", 300, "300", "", "III.B", "setup", "input",
               margin_reason=_INPUT),
    PaperValue("dataset_relations", "unique relations", 580, "580", "", "III.B", "setup", "input",
               margin_reason=_INPUT),
    PaperValue("dataset_train_instances", "training instances (70 %)", 700, "70 %", "", "III.B", "setup", "input",
               margin_reason=_INPUT),
    # Fig. 6: pooling versus no pooling
    PaperValue("fig6_rounds", "training rounds", 18, "18", "", "III.C, Fig. 6", "fig6", "input",
               margin_reason=_INPUT),
    PaperValue("fig6_gain_pct", "extra relations extracted with pooling, average over rounds", 19.0, "19 %", "%",
               "III.C, Fig. 6", "fig6", "effect", 5.0, _GAIN, seeds_field="fig6_seeds"),
    PaperValue("fig6_pooling_helps", "pooling extracts more relations than no pooling", None,
               "more (+19 %)", "", "III.C, Fig. 6", "fig6", "direction",
               margin_reason="a claim about the sign: reproduced when our CI of the gain lies wholly above 0",
               source="fig6_gain_pct", seeds_field="fig6_seeds"),
    # Fig. 7: accuracy and L1 over 60 epochs
    PaperValue("fig7_epochs", "training epochs", 60, "60", "", "III.C, Fig. 7", "fig7", "input",
               margin_reason=_INPUT),
    PaperValue("fig7_train_accuracy", "final training accuracy", 1.0, "converges to 1", "", "III.C, Fig. 7", "fig7",
               "value", 0.05, _CURVE, seeds_field="n_seeds"),
    PaperValue("fig7_val_accuracy", "final validation accuracy", 0.9, "~0.9", "", "III.C, Fig. 7", "fig7",
               "value", 0.05, _CURVE, seeds_field="n_seeds"),
    PaperValue("fig7_val_l1", "final validation L1 (eq. 9)", None, "falls (axis 0-0.5)", "", "III.C, Fig. 7", "fig7",
               "not comparable", margin_reason="the paper gives only the shape of the curve, no value"),
    # Fig. 8: response time against update rate
    PaperValue("fig8_gentwin_ms_low", "GenTwin response time at update rate 0.2", 400.0, "~400 ms", "ms",
               "III.C, Fig. 8", "fig8", "not comparable", margin_reason=_HARDWARE),
    PaperValue("fig8_traditional_ms_low", "traditional twin response time at update rate 0.2", 550.0, "~550 ms", "ms",
               "III.C, Fig. 8", "fig8", "not comparable", margin_reason=_HARDWARE),
    PaperValue("fig8_gap_low_pct", "response-time gap at the lowest update rate", 13.0, "13 %", "%",
               "III.C, Fig. 8", "fig8", "effect", 5.0, _GAP, seeds_field="twin_seeds"),
    PaperValue("fig8_gap_high_pct", "response-time gap at the highest update rate", 53.0, "~53 %", "%",
               "III.C, Fig. 8", "fig8", "effect", 5.0, _GAP, seeds_field="twin_seeds"),
    PaperValue("fig8_gap_widens", "the response-time gap widens with the update rate", None,
               "widens (13 % to ~53 %)", "", "III.C, Fig. 8", "fig8", "direction",
               margin_reason="a claim about the sign: reproduced when our CI of (gap at the highest rate - gap at "
                             "the lowest) lies wholly above 0",
               source="fig8_gap_widening_pct", seeds_field="twin_seeds"),
    # Table IV: data completeness
    *(PaperValue(f"table4_s{sc}_{size}", f"completeness, Scenario {sc}, {size} ({n} sensors)", v, f"{v}", "%",
                 "Table IV", "table4", "value", 0.05, _ROUNDED_1, seeds_field="physical_seeds")
      for sc, size, n, v in ((1, "small", 30, 99.8), (1, "medium", 100, 99.8), (1, "large", 250, 99.7),
                             (2, "small", 30, 99.7), (2, "medium", 100, 99.7), (2, "large", 250, 99.6))),
)


def by_key(key: str) -> PaperValue:
    """The reference row with this key (KeyError naming the key if unknown)."""
    row = next((row for row in PAPER_VALUES if row.key == key), None)
    if row is None:
        raise KeyError(f"no paper reference value with key {key!r}")
    return row
