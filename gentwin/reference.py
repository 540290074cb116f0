"""The paper's reported numbers, as labelled reference values.

These are the only place the paper's *results* appear in the library.  They are
never defaults, never inputs to a computation and never test expectations: the
book prints them beside the values our run computed (see the "Paper versus
reproduction" page).  Table III's *parameters* are inputs and live in
:mod:`gentwin.config` instead.

Each row names the glue key under which the notebook that reproduces it
publishes our value (``myst_nb.glue(key, value)``), so the comparison page can
read our number from the executed notebook.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PaperValue", "PAPER_VALUES", "by_key"]


@dataclass(frozen=True)
class PaperValue:
    """One number the paper reports, and where we publish ours."""

    key: str  #: glue key our notebook publishes
    quantity: str  #: what is measured
    paper: float | None  #: the paper's number (None when it gives only a shape)
    paper_text: str  #: the paper's number as the paper states it
    unit: str
    where: str  #: where in the paper
    notebook: str  #: the notebook (stem) that computes ours
    comparable: bool = True  #: False where our set-up cannot measure the same thing
    tolerance: float | None = None  #: absolute difference still called "reproduced" when no CI is available
    explanation: str = ""  #: why ours may differ, where that is known from the set-up rather than the run


PAPER_VALUES: tuple[PaperValue, ...] = (
    # Section III.B: the data set (inputs we generate to match; reported so the shape can be checked)
    PaperValue("dataset_instances", "instances in the data set", 1000, "1000", "", "III.B", "setup", tolerance=0),
    PaperValue("dataset_device_nodes", "nodes (sensors + gateways)", 300, "300", "", "III.B", "setup", tolerance=0),
    PaperValue("dataset_relations", "unique relations", 580, "580", "", "III.B", "setup", tolerance=0),
    PaperValue("dataset_train_instances", "training instances (70 %)", 700, "70 %", "", "III.B", "setup", tolerance=0),
    # Fig. 6: pooling versus no pooling
    PaperValue("fig6_rounds", "training rounds", 18, "18", "", "III.C, Fig. 6", "fig6", tolerance=0),
    PaperValue("fig6_gain_pct", "extra relations extracted with pooling, average over rounds", 19.0, "19 %", "%",
               "III.C, Fig. 6", "fig6"),
    # Fig. 7: accuracy and L1 over 60 epochs
    PaperValue("fig7_epochs", "training epochs", 60, "60", "", "III.C, Fig. 7", "fig7", tolerance=0),
    PaperValue("fig7_train_accuracy", "final training accuracy", 1.0, "converges to 1", "", "III.C, Fig. 7", "fig7"),
    PaperValue("fig7_val_accuracy", "final validation accuracy", 0.9, "~0.9", "", "III.C, Fig. 7", "fig7"),
    PaperValue("fig7_val_l1", "final validation L1 (eq. 9)", None, "falls (axis 0-0.5)", "", "III.C, Fig. 7", "fig7",
               comparable=False),
    # Fig. 8: response time against update rate
    PaperValue("fig8_gentwin_ms_low", "GenTwin response time at update rate 0.2", 400.0, "~400 ms", "ms",
               "III.C, Fig. 8", "fig8"),
    PaperValue("fig8_traditional_ms_low", "traditional twin response time at update rate 0.2", 550.0, "~550 ms", "ms",
               "III.C, Fig. 8", "fig8"),
    PaperValue("fig8_gap_low_pct", "response-time gap at the lowest update rate", 13.0, "13 %", "%",
               "III.C, Fig. 8", "fig8"),
    PaperValue("fig8_gap_high_pct", "response-time gap at the highest update rate", 53.0, "~53 %", "%",
               "III.C, Fig. 8", "fig8"),
    # Table IV: data completeness
    PaperValue("table4_s1_small", "completeness, Scenario 1, small (30 sensors)", 99.8, "99.8", "%", "Table IV", "table4"),
    PaperValue("table4_s1_medium", "completeness, Scenario 1, medium (100 sensors)", 99.8, "99.8", "%", "Table IV",
               "table4"),
    PaperValue("table4_s1_large", "completeness, Scenario 1, large (250 sensors)", 99.7, "99.7", "%", "Table IV", "table4"),
    PaperValue("table4_s2_small", "completeness, Scenario 2, small (30 sensors)", 99.7, "99.7", "%", "Table IV", "table4"),
    PaperValue("table4_s2_medium", "completeness, Scenario 2, medium (100 sensors)", 99.7, "99.7", "%", "Table IV",
               "table4"),
    PaperValue("table4_s2_large", "completeness, Scenario 2, large (250 sensors)", 99.6, "99.6", "%", "Table IV", "table4"),
)


def by_key(key: str) -> PaperValue:
    """The reference row with this glue key (KeyError naming the key if unknown)."""
    for row in PAPER_VALUES:
        if row.key == key:
            return row
    raise KeyError(f"no paper reference value with key {key!r}")
