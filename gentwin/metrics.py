"""The measured quantities of the reproduction: eq. (9) L1 and accuracy, eq. (10) retrieval, completeness, response gap, pooling gain."""
from __future__ import annotations

# Sections (one owner each while the library is restructured; keep these markers):
# --- eq. (9): L1 and accuracy over relations; the pooling gain (Fig. 6) ---
# --- eq. (10): retrieval recall@k ---
# --- Fig. 8: response gap ---
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
