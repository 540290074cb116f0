"""The measured quantities of the reproduction: eq. (9) L1 and accuracy, eq. (10) retrieval, completeness, response gap, pooling gain."""
from __future__ import annotations

# Sections (one owner each while the library is restructured; keep these markers):
# --- eq. (9): L1 and accuracy over relations; the pooling gain (Fig. 6) ---
# --- eq. (10): retrieval recall@k ---


def recall_at_k(retrieved, gold, k: int) -> float:
    """Eq. (10)'s retrieval measure: the share of the gold facts among the first ``k`` retrieved.

    .. math:: \\mathrm{recall@}k = |\\mathrm{gold} \\cap \\mathrm{top}_k| / |\\mathrm{gold}|

    ``retrieved`` is the retriever's ranking (best first), ``gold`` the facts
    that answer the question (any hashable items).

    Examples
    --------
    Gold {a, b}; the ranking a, c, b has one of two in its top 2 and both in its top 3:

    >>> recall_at_k(["a", "c", "b"], {"a", "b"}, k=2), recall_at_k(["a", "c", "b"], {"a", "b"}, k=3)
    (0.5, 1.0)
    >>> recall_at_k(["a"], {"a"}, k=0)
    Traceback (most recent call last):
    ...
    ValueError: k = 0: must be an integer >= 1
    """
    gold = set(gold)
    if not gold:
        raise ValueError("gold: a question needs at least one gold fact")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k = {k!r}: must be an integer >= 1")
    return len(gold & set(retrieved[:k])) / len(gold)


# --- Fig. 8: response gap ---


def response_gap(traditional_ms: float, gentwin_ms: float) -> float:
    """Fig. 8's response-time gap in %: ``(traditional - GenTwin) / traditional * 100`` (positive: GenTwin faster).

    >>> response_gap(200.0, 150.0), response_gap(100.0, 120.0)
    (25.0, -20.0)
    >>> response_gap(0.0, 1.0)
    Traceback (most recent call last):
    ...
    ValueError: traditional_ms = 0.0: must be > 0
    """
    if not traditional_ms > 0:
        raise ValueError(f"traditional_ms = {traditional_ms!r}: must be > 0")
    return (traditional_ms - gentwin_ms) / traditional_ms * 100.0


def response_gaps(per_seed, confidence: float = 0.95):
    """Fig. 8's gap per update rate, from one mean response time per twin, rate and seed.

    ``per_seed`` has columns ``twin`` (``"GenTwin"``, ``"traditional"``),
    ``rate``, ``seed`` and ``response_ms``.  The twins' times are means over
    seeds and ``gap %`` is :func:`response_gap` of those means; its interval
    comes from the per-seed gaps (:func:`gentwin.stats.mean_ci`).

    Returns a DataFrame indexed by rate with columns ``GenTwin (ms)``,
    ``traditional (ms)``, ``gap %``, ``gap % CI low (per seed)`` and
    ``gap % CI high (per seed)``.

    Examples
    --------
    Two seeds at one rate: means 150 ms and 200 ms give a 25 % gap; the
    per-seed gaps are 20 % and 30 %, so the interval is centred on 25 %:

    >>> import pandas as pd
    >>> per_seed = pd.DataFrame({"twin": ["GenTwin", "GenTwin", "traditional", "traditional"],
    ...                          "rate": [0.2] * 4, "seed": [0, 1, 0, 1], "response_ms": [160.0, 140.0, 200.0, 200.0]})
    >>> g = response_gaps(per_seed)
    >>> g.loc[0.2, ["GenTwin (ms)", "traditional (ms)", "gap %"]].tolist()
    [150.0, 200.0, 25.0]
    >>> round(float(g.loc[0.2, "gap % CI low (per seed)"] + g.loc[0.2, "gap % CI high (per seed)"]), 9)
    50.0
    """
    import pandas as pd

    from .stats import mean_ci, summarise

    curve = summarise(per_seed, ["twin", "rate"], "response_ms", confidence)
    wide = curve.pivot(index="rate", columns="twin", values="mean")
    gaps = pd.Series([response_gap(wide.loc[r, "traditional"], wide.loc[r, "GenTwin"]) for r in wide.index],
                     index=wide.index, name="gap %")
    seed_wide = per_seed.pivot_table(index=["rate", "seed"], columns="twin", values="response_ms")
    seed_gaps = (seed_wide["traditional"] - seed_wide["GenTwin"]) / seed_wide["traditional"] * 100
    gap_ci = pd.DataFrame([dict(zip(("mean", "low", "high"), mean_ci(seed_gaps.loc[r], confidence)))
                           for r in wide.index], index=wide.index)
    return pd.DataFrame({
        "GenTwin (ms)": wide["GenTwin"], "traditional (ms)": wide["traditional"], "gap %": gaps,
        "gap % CI low (per seed)": gap_ci["low"], "gap % CI high (per seed)": gap_ci["high"],
    })


# --- Table IV: completeness ---

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CompletenessScore:
    """Data completeness of one twin over one run (Table IV), with its parts.

    ``completeness`` is the share of ground-truth records the twin holds,
    observed or generated-and-correct; ``observed_share`` counts observed
    records only (the traditional twin's completeness);
    ``generated_precision`` is the share of generated records that are
    correct (NaN when the twin generated none); ``false_record_rate`` is the
    number of wrong generated records per ground-truth record.
    """

    n_truth: int
    n_observed: int
    n_generated: int
    n_generated_correct: int
    completeness: float
    observed_share: float
    generated_precision: float
    false_record_rate: float


def _completeness_grid(name: str, a: object, shape: tuple[int, ...] | None = None) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype != bool:
        raise ValueError(f"{name}: must be a boolean array (got dtype {arr.dtype})")
    if arr.ndim != 2:
        raise ValueError(f"{name}: must be a (sensor, slot) grid, got {arr.ndim} dimension(s)")
    if shape is not None and arr.shape != shape:
        raise ValueError(f"{name}: shape {arr.shape} differs from truth's shape {shape}")
    return arr


def completeness(truth: np.ndarray, observed: np.ndarray, generated: np.ndarray | None = None) -> CompletenessScore:
    """Data completeness (Table IV) of a twin against the simulator's ground truth.

    The paper reports completeness as "how much GenTwin can maintain data in
    cyberspace" without a formula.  The reading used here, over the
    (sensor, reading-slot) cells of one run:

    .. math::

        T &= \\{(s, k) : \\text{sensor } s \\text{ sent a reading in slot } k\\} \\\\
        \\text{completeness} &= \\frac{|O| + |G \\cap T|}{|T|}, \\qquad
        \\text{precision} = \\frac{|G \\cap T|}{|G|}, \\qquad
        \\text{false-record rate} = \\frac{|G \\setminus T|}{|T|}

    with ``O`` the records the twin observed and ``G`` the records it
    generated.  A sensor that is truly inactive in a slot sent nothing, so its
    cell is not in ``T``; a record generated there is wrong: it does not raise
    completeness and it lowers the precision.  A generated record never counts
    as observed (``O`` and ``G`` must be disjoint).

    Parameters
    ----------
    truth, observed
        Boolean arrays of shape (n_sensors, n_slots): the ground truth (a
        reading was sent) and what the twin received in time.  ``observed``
        must lie inside ``truth``: the network cannot deliver a reading nobody
        sent.
    generated
        Boolean array of the same shape: records the twin generated (flagged as
        generated).  ``None`` (default) for the traditional twin, which never
        generates.

    Returns
    -------
    CompletenessScore

    Raises
    ------
    ValueError
        Wrong dtype or shape, an observed record outside ``truth``, a cell both
        observed and generated, or an empty ``truth``.

    Examples
    --------
    Two sensors, three slots; sensor 1 is inactive in slot 2; slot 1 is cut;
    the twin generates both cut cells and a record for sensor 1 in slot 2:

    >>> T = np.array([[1, 1, 1], [1, 1, 0]], bool)
    >>> O = np.array([[1, 0, 1], [1, 0, 0]], bool)
    >>> G = np.array([[0, 1, 0], [0, 1, 1]], bool)
    >>> s = completeness(T, O, G)
    >>> s.n_truth, s.n_observed, s.n_generated, s.n_generated_correct
    (5, 3, 3, 2)
    >>> s.completeness, round(s.generated_precision, 4), s.false_record_rate
    (1.0, 0.6667, 0.2)
    >>> completeness(T, O).completeness   # the traditional twin: 3 of 5
    0.6
    """
    t = _completeness_grid("truth", truth)
    o = _completeness_grid("observed", observed, t.shape)
    g = np.zeros_like(t) if generated is None else _completeness_grid("generated", generated, t.shape)
    n_truth = int(t.sum())
    if n_truth == 0:
        raise ValueError("truth: holds no record (no sensor sent a reading); completeness is undefined")
    stray = o & ~t
    if stray.any():
        s, k = np.argwhere(stray)[0]
        raise ValueError(
            f"observed: cell (sensor {s}, slot {k}) is observed but the ground truth has no reading there"
        )
    both = o & g
    if both.any():
        s, k = np.argwhere(both)[0]
        raise ValueError(
            f"generated: cell (sensor {s}, slot {k}) is both observed and generated; "
            "a generated record must never stand for an observed one"
        )
    n_obs = int(o.sum())
    n_gen = int(g.sum())
    n_good = int((g & t).sum())
    return CompletenessScore(
        n_truth=n_truth,
        n_observed=n_obs,
        n_generated=n_gen,
        n_generated_correct=n_good,
        completeness=(n_obs + n_good) / n_truth,
        observed_share=n_obs / n_truth,
        generated_precision=(n_good / n_gen) if n_gen else math.nan,
        false_record_rate=(n_gen - n_good) / n_truth,
    )
