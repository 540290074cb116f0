"""The measured quantities of the reproduction: eq. (9) L1 and accuracy, eq. (10) retrieval, completeness, response gap, pooling gain."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .checks import check_choice, check_int
from .stats import mean_ci

__all__ = ["l1_loss", "relation_indicators", "triple_scores", "compare_graph", "pooling_gain", "class_accuracy",
           "bootstrap_ci", "min_detectable_effect", "recall_at_k", "answer_correct", "answer_scores", "response_gap",
           "response_gaps", "gap_widening", "CompletenessScore", "completeness", "net_completeness"]

# --- eq. (9): L1 and accuracy over relations; the pooling gain (Fig. 6) ---


def l1_loss(r, r_hat) -> float:
    r"""Eq. (9): :math:`L_1 = \sum_{i=1}^{M} |r_i - \hat r_i| / M` over the indexed relations.

    ``r_i = 1`` when relation i is true, ``r̂_i = 1`` when the model produces
    it (values in [0, 1], e.g. probabilities, are accepted).

    >>> l1_loss([1, 1, 1, 0], [1, 1, 0, 1])  # (0 + 0 + 1 + 1) / 4
    0.5
    """
    a = np.asarray(r, dtype=float)
    b = np.asarray(r_hat, dtype=float)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"r = {r!r}: must be a non-empty vector (one entry per indexed relation)")
    if b.shape != a.shape:
        raise ValueError(f"r_hat: has {b.size} entries but r has {a.size} (one per indexed relation)")
    for name, x in (("r", a), ("r_hat", b)):
        if not np.isfinite(x).all() or (x < 0).any() or (x > 1).any():
            raise ValueError(f"{name} = {x.tolist()}: entries must be in [0, 1]")
    return float(np.abs(a - b).sum() / a.size)


def relation_indicators(gold, produced, index: str = "union"):
    """The vectors ``r``, ``r̂`` of eq. (9) and the relations they index.

    ``index="union"``: true and produced relations, so ``L1 = |G Δ P| / |G ∪ P|``;
    ``index="gold"``: the true ones only, so ``L1 = 1 - recall``.

    >>> r, r_hat, rels = relation_indicators({"a", "b", "c"}, {"a", "b", "x"})
    >>> rels, r.tolist(), r_hat.tolist()
    (['a', 'b', 'c', 'x'], [1, 1, 1, 0], [1, 1, 0, 1])
    >>> relation_indicators({"a", "b"}, {"a", "x"}, index="gold")[1].tolist()
    [1, 0]
    """
    check_choice("l1_index", index, ("union", "gold"))
    g, p = set(gold), set(produced)
    rels = sorted(g | p) if index == "union" else sorted(g)
    r = np.array([1 if x in g else 0 for x in rels], dtype=int)
    r_hat = np.array([1 if x in p else 0 for x in rels], dtype=int)
    return r, r_hat, rels


def triple_scores(gold, produced, index: str = "union") -> dict[str, float]:
    """Micro-averaged accuracy ``Σ|P_e ∩ G_e| / Σ|G_e|``, precision and eq. (9) L1 over entities.

    A produced triple is correct only for the entity whose prompt produced it.

    >>> g = [{("s", "IN", "a"), ("s", "SERVES_IN", "b")}, {("t", "IN", "a")}]
    >>> p = [{("s", "IN", "a"), ("s", "IN", "z")}, set()]
    >>> sc = triple_scores(g, p)
    >>> sc["accuracy"], sc["precision"], sc["l1"]  # 1/3, 1/2, (0+1+1 + 1) / 4
    (0.3333333333333333, 0.5, 0.75)
    """
    if len(gold) != len(produced):
        raise ValueError(f"produced: {len(produced)} entities but gold has {len(gold)}")
    if len(gold) == 0:
        raise ValueError("gold = []: no entity to score")
    g_all = {(e, x) for e, s in enumerate(gold) for x in s}
    p_all = {(e, x) for e, s in enumerate(produced) for x in s}
    if not g_all:
        raise ValueError("gold: the entities have no true relation")
    correct = len(g_all & p_all)
    r, r_hat, _ = relation_indicators(g_all, p_all, index)
    return {"accuracy": correct / len(g_all), "precision": correct / len(p_all) if p_all else 0.0,
            "l1": l1_loss(r, r_hat), "n_gold": float(len(g_all)), "n_produced": float(len(p_all)),
            "n_correct": float(correct)}


def compare_graph(generated, truth) -> dict[str, float]:
    """Precision and recall of a generated edge set against the true relations (or a Topology's M relations).

    >>> t = {("a", "IN", "b"), ("c", "IN", "b")}
    >>> compare_graph({("a", "IN", "b"), ("a", "IN", "c")}, t)
    {'true': 2, 'produced': 2, 'correct': 1, 'precision': 0.5, 'recall': 0.5}
    """
    true = set(truth.device_relations()) if hasattr(truth, "device_relations") else set(truth)
    gen = set(generated)
    if not true:
        raise ValueError("truth: has no relation")
    correct = len(gen & true)
    return {"true": len(true), "produced": len(gen), "correct": correct,
            "precision": correct / len(gen) if gen else 0.0, "recall": correct / len(true)}


def pooling_gain(with_pooling, without_pooling) -> float:
    """Extra relations extracted with pooling, in % of those without, summed over rounds (Fig. 6).

    The ratio of the areas under the two curves: a per-round ratio would
    explode on rounds where the random order extracts almost nothing.

    >>> pooling_gain([12, 24], [10, 20])  # 100 (36 - 30) / 30
    20.0
    """
    a = np.asarray(with_pooling, dtype=float)
    b = np.asarray(without_pooling, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError("with_pooling, without_pooling: need two non-empty curves of equal length "
                         f"({a.shape}, {b.shape})")
    if b.sum() <= 0:
        raise ValueError("without_pooling: extracted nothing in any round; the gain is undefined")
    return float(100.0 * (a.sum() - b.sum()) / b.sum())


def class_accuracy(gold, produced, members) -> dict[str, float]:
    """Accuracy over the true triples copyable from entity e's prompt (``members[e]``) and over the rest.

    NaN for a class with no true triple.

    >>> g = [{"a", "b", "c"}, {"d"}]
    >>> p = [{"a", "c", "z"}, set()]
    >>> class_accuracy(g, p, [{"a", "b"}, set()])  # copyable: a of {a, b}; inferred: c of {c, d}
    {'accuracy_copyable': 0.5, 'accuracy_inferred': 0.5, 'copyable_share': 0.5}
    """
    if not len(gold) == len(produced) == len(members):
        raise ValueError(f"produced, members: {len(produced)} and {len(members)} entities but gold has {len(gold)}")
    hit = {"c": 0, "i": 0}
    total = {"c": 0, "i": 0}
    for g, p, m in zip(gold, produced, members):
        for x in g:
            k = "c" if x in m else "i"
            total[k] += 1
            hit[k] += x in p
    n = total["c"] + total["i"]
    if n == 0:
        raise ValueError("gold: the entities have no true relation")
    acc = {k: hit[k] / total[k] if total[k] else float(np.nan) for k in hit}
    return {"accuracy_copyable": acc["c"], "accuracy_inferred": acc["i"], "copyable_share": total["c"] / n}


def bootstrap_ci(values, confidence: float = 0.95, *, seed: int = 0, n_resamples: int = 9999):
    """Mean and percentile-bootstrap interval of per-seed values (``scipy.stats.bootstrap``).

    A percentile interval is made of resampled means, so it never leaves the
    range the values can take.  Fewer than two values: the interval is NaN.

    >>> m, lo, hi = bootstrap_ci([10.0, 12.0, 14.0, 30.0])
    >>> m, 10.0 <= lo < m < hi <= 30.0
    (16.5, True)
    >>> bootstrap_ci([4.0])
    (4.0, nan, nan)
    """
    from scipy import stats

    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    if x.size < 2 or np.ptp(x) == 0:  # one value: no interval; equal values: the interval is that value
        bound = float(x[0]) if x.size >= 2 else float("nan")
        return float(x.mean()), bound, bound
    res = stats.bootstrap((x,), np.mean, confidence_level=confidence, method="percentile",
                          n_resamples=n_resamples, rng=np.random.default_rng(seed))
    return float(x.mean()), float(res.confidence_interval.low), float(res.confidence_interval.high)


def min_detectable_effect(values) -> float:
    """Minimum detectable effect of paired per-seed differences at 80 % power, alpha = 0.05: ``2.8 s / sqrt(n)``.

    >>> round(min_detectable_effect([0.0, 2.0, 4.0, 6.0]), 3)  # s = 2.582, n = 4
    3.615
    """
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if x.size < 2:
        return float("nan")
    return float(2.8 * x.std(ddof=1) / np.sqrt(x.size))


# --- eq. (10): retrieval recall@k ---


def recall_at_k(retrieved, gold, k: int) -> float:
    """Eq. (10)'s retrieval measure: ``|gold ∩ top_k| / |gold|`` over a ranking (best first).

    >>> recall_at_k(["a", "c", "b"], {"a", "b"}, k=2), recall_at_k(["a", "c", "b"], {"a", "b"}, k=3)
    (0.5, 1.0)
    """
    gold = set(gold)
    if not gold:
        raise ValueError("gold: a question needs at least one gold fact")
    k = check_int("k", k, low=1)
    return len(gold & set(retrieved[:k])) / len(gold)


def _fact_key(item):
    return item.key if hasattr(item, "key") else tuple(item[:-1])


def answer_correct(retrieved, gold, k: int, key=_fact_key) -> bool:
    """Eq. (10)'s answer score: the first ``k`` retrieved facts hold every gold fact and contradict none.

    A retrieved fact contradicts when it has a gold fact's key
    (``(subject, relation)``) but a value no gold fact has: S connected to G1
    *and* G2, when only G1 is true, is a wrong answer.  ``key(item)`` defaults
    to a :class:`gentwin.prompting.Fact`'s ``key``, or all but the last element of a tuple.

    >>> gold = {("S", "gw", "G1")}
    >>> answer_correct([("S", "gw", "G1"), ("S", "active", "yes")], gold, k=2)
    True
    >>> answer_correct([("S", "gw", "G1"), ("S", "gw", "G2")], gold, k=2)
    False
    >>> answer_correct([("S", "gw", "G2"), ("S", "gw", "G1")], gold, k=1)
    False
    """
    if recall_at_k(retrieved, gold, k) < 1.0:  # also checks gold and k
        return False
    gold = set(gold)
    keys = {key(g) for g in gold}
    return not any(key(x) in keys and x not in gold for x in retrieved[:k])


def answer_scores(per_question, baseline: str, confidence: float = 0.95, *, seed: int = 0):
    """Share of correct answers and mean recall@k per graph, with percentile-bootstrap intervals over questions.

    ``per_question`` has columns ``graph``, ``qid``, ``correct`` (0/1) and
    ``recall``; every graph must answer the same questions.  Each graph other
    than ``baseline`` also gets a row ``"<graph> − <baseline>"`` of paired
    per-question differences.
    """
    import pandas as pd

    missing = {"graph", "qid", "correct", "recall"} - set(per_question.columns)
    if missing:
        raise ValueError(f"per_question: lacks the column(s) {', '.join(sorted(missing))}")
    wide = {m: per_question.pivot(index="qid", columns="graph", values=m) for m in ("correct", "recall")}
    graphs = list(dict.fromkeys(per_question["graph"]))
    if baseline not in graphs:
        raise ValueError(f"baseline = {baseline!r}: is not one of the graphs {graphs}")
    if wide["correct"].isna().any().any():
        raise ValueError("per_question: the graphs do not answer the same questions (a qid is missing for one)")
    columns = {name: {m: wide[m][name] for m in wide} for name in graphs}
    columns.update({f"{g} − {baseline}": {m: wide[m][g] - wide[m][baseline] for m in wide}
                    for g in graphs if g != baseline})
    rows = {}
    for name, values in columns.items():
        row = {}
        for m, v in values.items():
            row[m], row[f"{m}_low"], row[f"{m}_high"] = bootstrap_ci(v.to_numpy(float), confidence, seed=seed)
        rows[name] = dict(row, n_questions=len(values["correct"]))
    return pd.DataFrame.from_dict(rows, orient="index")


# --- Fig. 8: response gap ---


def response_gap(traditional_ms: float, gentwin_ms: float) -> float:
    """Fig. 8's response-time gap in %: ``(traditional - GenTwin) / traditional * 100`` (positive: GenTwin faster).

    >>> response_gap(200.0, 150.0), response_gap(100.0, 120.0)
    (25.0, -20.0)
    """
    if not traditional_ms > 0:
        raise ValueError(f"traditional_ms = {traditional_ms!r}: must be > 0")
    return (traditional_ms - gentwin_ms) / traditional_ms * 100.0


def response_gaps(per_seed, confidence: float = 0.95, *, arm: str = "GenTwin", baseline: str = "traditional",
                  by: str = "rate"):
    """Fig. 8's gap of ``arm`` against ``baseline`` per value of ``by``, from one mean response time per twin,
    group and seed.

    ``per_seed`` has columns ``twin``, ``by``, ``seed`` and ``response_ms``.
    ``gap %`` is :func:`response_gap` of the means over seeds; its interval
    (:func:`gentwin.stats.mean_ci`) is over the paired per-seed gaps of the
    ``n`` seeds that have both twins.
    """
    import pandas as pd

    seed_wide = per_seed[per_seed["twin"].isin([arm, baseline])].pivot_table(
        index=[by, "seed"], columns="twin", values="response_ms").dropna()
    seed_gaps = (seed_wide[baseline] - seed_wide[arm]) / seed_wide[baseline] * 100
    rows = []
    for key, sub in seed_wide.groupby(level=0, sort=True):
        a, b = float(sub[arm].mean()), float(sub[baseline].mean())
        m, lo, hi = mean_ci(seed_gaps.loc[key].to_numpy(), confidence)
        rows.append({by: key, f"{arm} (ms)": a, f"{baseline} (ms)": b, "gap %": response_gap(b, a),
                     "gap % (per seed)": m, "gap % CI low (per seed)": lo, "gap % CI high (per seed)": hi,
                     "n": len(sub)})
    return pd.DataFrame(rows).set_index(by)


def gap_widening(per_seed, low, high, confidence: float = 0.95, *, arm: str = "GenTwin",
                 baseline: str = "traditional", by: str = "rate") -> tuple[float, float, float, int]:
    """How much the gap of ``arm`` against ``baseline`` grows from group ``low`` to group ``high`` of ``by``.

    Returns the mean, CI low, CI high and number of the paired per-seed
    differences (gap at ``high`` minus gap at ``low``; positive: it widens).
    """
    wide = per_seed[per_seed["twin"].isin([arm, baseline])].pivot_table(
        index=["seed"], columns=[by, "twin"], values="response_ms")
    diff = []
    for seed, row in wide.iterrows():
        vals = [row.get((group, twin)) for group in (high, low) for twin in (arm, baseline)]
        if any(v is None or v != v for v in vals):
            continue
        diff.append(response_gap(vals[1], vals[0]) - response_gap(vals[3], vals[2]))  # at high minus at low
    if not diff:
        return math.nan, math.nan, math.nan, 0
    mean, lo, hi = mean_ci(diff, confidence)
    return mean, lo, hi, len(diff)


# --- Table IV: completeness ---

@dataclass(frozen=True)
class CompletenessScore:
    """Data completeness of one twin over one run (Table IV), with its parts (see :func:`completeness`)."""

    n_truth: int
    n_observed: int
    n_generated: int
    n_generated_correct: int
    completeness: float
    observed_share: float  #: observed records only: the traditional twin's completeness
    generated_precision: float  #: NaN when the twin generated nothing
    false_record_rate: float  #: wrong generated records per ground-truth record

    @property
    def net_completeness(self) -> float:
        """Completeness with wrong generated records counted against: see :func:`net_completeness`."""
        wrong = self.n_generated - self.n_generated_correct
        return (self.n_observed + self.n_generated_correct - wrong) / self.n_truth

    @property
    def record_precision(self) -> float:
        """Share of the records the twin holds that are right: ``(|O| + |G ∩ T|) / (|O| + |G|)``."""
        held = self.n_observed + self.n_generated
        return (self.n_observed + self.n_generated_correct) / held if held else math.nan

    @property
    def record_f1(self) -> float:
        """Harmonic mean of :attr:`record_precision` and completeness (0 when the twin holds nothing right)."""
        p, r = self.record_precision, self.completeness
        return 2 * p * r / (p + r) if p + r > 0 else 0.0


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

    The paper gives no formula.  Over the boolean (sensor, slot) grids of one
    run, with ``T`` the cells where a reading was sent, ``O`` the observed
    records (inside ``T``) and ``G`` the generated ones (``None``: the
    traditional twin), disjoint from ``O``:
    completeness ``(|O| + |G ∩ T|) / |T|``, precision ``|G ∩ T| / |G|``,
    false-record rate ``|G \\ T| / |T|``.  A record generated where the sensor
    was truly inactive is wrong.

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
    for name, bad, why in (("observed", o & ~t, "is observed but the ground truth has no reading there"),
                           ("generated", o & g, "is both observed and generated; "
                                                "a generated record must never stand for an observed one")):
        if bad.any():
            s, k = np.argwhere(bad)[0]
            raise ValueError(f"{name}: cell (sensor {s}, slot {k}) {why}")
    n_obs = int(o.sum())
    n_gen = int(g.sum())
    n_good = int((g & t).sum())
    return CompletenessScore(
        n_truth=n_truth, n_observed=n_obs, n_generated=n_gen, n_generated_correct=n_good,
        completeness=(n_obs + n_good) / n_truth, observed_share=n_obs / n_truth,
        generated_precision=(n_good / n_gen) if n_gen else math.nan, false_record_rate=(n_gen - n_good) / n_truth)


def net_completeness(truth: np.ndarray, observed: np.ndarray, generated: np.ndarray | None = None) -> float:
    """Table IV's completeness with each wrong generated record cancelling a right one.

    ``(|O| + |G ∩ T| - |G \\ T|) / |T|``, completeness minus the false-record
    rate: :func:`completeness` ignores wrong records, so a twin that generates
    every missing reading would score 1.

    The example of :func:`completeness`: ``(3 + 2 - 1) / 5 = 0.8``; record
    precision 5/6, so F1 = ``2 (5/6) 1 / (5/6 + 1) = 10/11``:

    >>> T = np.array([[1, 1, 1], [1, 1, 0]], bool)
    >>> O = np.array([[1, 0, 1], [1, 0, 0]], bool)
    >>> G = np.array([[0, 1, 0], [0, 1, 1]], bool)
    >>> net_completeness(T, O, G)
    0.8
    >>> s = completeness(T, O, G)
    >>> round(s.record_precision, 4), round(s.record_f1, 4)
    (0.8333, 0.9091)
    """
    return completeness(truth, observed, generated).net_completeness
