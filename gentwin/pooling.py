"""Priority Pooling: eqs. (1)-(7) and Algorithm 1 lines 1-8 (Section II.B.1), and the training orders it gives.

:class:`PriorityPool` runs the equation functions over the sensor log; where the paper is open, the
readings are the fields of :class:`gentwin.config.PoolingConfig`, explained on the errata page.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import partial
from typing import NamedTuple, Sequence

import numpy as np

from .checks import check_choice, check_int, check_real
from .config import field_spec
from .progress import progress
from .topology import DataSet, Instance, Topology, generate_dataset

__all__ = [
    "POOLS", "BANDS", "POOL_WEIGHTS", "ALPHA_READINGS", "RELATION_COUNTS", "RELATION_OWNERS", "ORDERS", "READINGS",
    "NO_POOL", "PoolingError", "pool_readings", "checked_seen", "presence", "observation_counts", "key_value_pairs",
    "relation_counts", "priority", "pool_bounds",
    "assign_pools", "node_weights", "pool_contributions", "pool_weights", "weight_matrix", "update_trigger",
    "TopologyArrays", "topology_arrays", "encode_instances", "PoolArrays", "pool_arrays", "PoolSnapshot", "alpha",
    "PriorityPool", "pool_snapshot", "training_order",
]

#: Pool names in the order of the rows of W_C (high, medium, low priority).
POOLS: tuple[str, ...] = ("H", "M", "L")
# The readings' choices are declared once, with their help text, in gentwin.config.
BANDS: tuple[str, ...] = field_spec("band").choices
POOL_WEIGHTS: tuple[str, ...] = field_spec("pool_weight").choices
ALPHA_READINGS: tuple[str, ...] = field_spec("alpha_reading").choices
RELATION_COUNTS: tuple[str, ...] = field_spec("relation_count").choices
RELATION_OWNERS: tuple[str, ...] = field_spec("relation_owner").choices
# Whose relations N_i counts defaults to the config's default, so one flip there moves every caller.
_OWNER: str = field_spec("relation_owner").default
ORDERS: tuple[str, ...] = field_spec("order").choices
#: The fields of :class:`gentwin.config.PoolingConfig` that :class:`PriorityPool` takes as readings.
READINGS: tuple[str, ...] = ("band", "pool_weight", "relation_count", "relation_owner", "alpha_reading")
#: Code of a node that belongs to no pool (unseen, or in the gap of the printed eq. (4)).
NO_POOL = -1


class PoolingError(ValueError):
    """Inputs of Priority Pooling are inconsistent or out of range."""


_choice = partial(check_choice, error=PoolingError)


def pool_readings(pooling) -> dict[str, str]:
    """The :data:`READINGS` of a :class:`gentwin.config.PoolingConfig`, as keyword arguments of
    :class:`PriorityPool`, :func:`pool_snapshot` and :func:`training_order`."""
    return {name: getattr(pooling, name) for name in READINGS}


def _first_bad(name: str, values: np.ndarray, bad: np.ndarray, why: str) -> None:
    """PoolingError naming the first entry of ``values`` where ``bad`` holds."""
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        raise PoolingError(f"{name}[{j}] = {values[j].item()!r}: {why}")


def _one_d(name: str, x) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1:
        raise PoolingError(f"{name}: must be a 1-D array (got shape {a.shape})")
    return a


def _vector(name: str, x, *, integer: bool = False) -> np.ndarray:
    """A 1-D float (or int) array with no NaN, inf or negative entry."""
    a = _one_d(name, x)
    a = a.astype(np.int64) if a.dtype == bool else a
    if a.dtype.kind not in "iuf":
        raise PoolingError(f"{name}: must hold numbers (got dtype {a.dtype})")
    if a.dtype.kind == "f":
        _first_bad(name, a, ~np.isfinite(a), "must be a finite number")
        if integer:
            _first_bad(name, a, a != np.floor(a), "must be a whole number")
            a = a.astype(np.int64)
    if a.size and a.min() < 0:
        _first_bad(name, a, a == a.min(), "must be >= 0")
    return a


def _same_length(**arrays: np.ndarray) -> int:
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise PoolingError("lengths disagree: " + ", ".join(f"len({k}) = {v}" for k, v in lengths.items()))
    return next(iter(lengths.values()))


def checked_seen(name: str, values, seen) -> tuple[np.ndarray, np.ndarray]:
    """``values`` as a 1-D array of finite numbers >= 0 and the ``seen`` mask (all True when None), of one
    length; PoolingError naming the first bad entry."""
    p = _vector(name, values)
    s = np.ones(p.size, dtype=bool) if seen is None else np.asarray(seen, dtype=bool)
    _same_length(**{name: p, "seen": s})
    return p, s


def _kinds(kinds) -> np.ndarray:
    """The is-sensor mask; PoolingError naming a kind other than sensor or gateway."""
    k = _one_d("kinds", kinds)
    _first_bad("kinds", k.astype(str), (k != "sensor") & (k != "gateway"), "must be 'sensor' or 'gateway' (eqs. 2, 5)")
    return k == "sensor"


def _codes(name: str, x, what: str, low: int, high: int, why: str) -> np.ndarray:
    """A 1-D integer array with every entry in [low, high)."""
    c = np.asarray(x)
    if c.ndim != 1 or c.dtype.kind not in "iu":
        raise PoolingError(f"{name}: must be a 1-D integer array{what} (got {c.dtype}, shape {c.shape})")
    _first_bad(name, c, (c < low) | (c >= high), why)
    return c


def _node_index(node_index, n: int) -> np.ndarray:
    check_int("n", n, low=0, error=PoolingError)
    if np.size(node_index) == 0:
        return np.zeros(0, dtype=np.int64)
    return _codes("node_index", node_index, "", 0, n, f"must be in [0, {n}) (n = {n})").astype(np.int64, copy=False)


def presence(node_index, present, n: int) -> np.ndarray:
    """Eq. (1): presence ⊥_i of every node: the ``present`` flag of its latest instance, 0 when unseen.

    ``node_index`` (m integers in 0..n-1, in time order) and ``present`` (m
    booleans) describe the instances; returns n values 0 or 1 (int8).

    Node 0 seen present then absent, node 1 present, node 2 never seen:

    >>> presence([0, 1, 0], [True, True, False], 3).tolist()
    [0, 1, 0]
    """
    idx = _node_index(node_index, n)
    pres = _one_d("present", present)
    if pres.dtype != bool:
        _first_bad("present", pres, ~np.isin(pres, (0, 1)), "must be true/false (1/0)")
        pres = pres.astype(bool)
    _same_length(node_index=idx, present=pres)
    last = np.full(n, -1, dtype=np.int64)
    np.maximum.at(last, idx, np.arange(idx.size, dtype=np.int64))
    out = np.zeros(n, dtype=np.int8)
    out[last >= 0] = pres[last[last >= 0]]
    return out


def observation_counts(node_index, n: int) -> np.ndarray:
    """How many instances of each node the log holds (c_i; 0 means unseen), for eqs. (3)-(4).

    >>> observation_counts([0, 1, 0], 3).tolist()
    [2, 1, 0]
    """
    return np.bincount(_node_index(node_index, n), minlength=n).astype(np.int64)


def key_value_pairs(node_ids: Sequence[str], kinds, gateway_of: Sequence[str | None], degree) -> list[tuple]:
    """Eq. (2): the (k, v) pair of each device node: ``([:s], (s_ID, g_s))`` or ``([:gw], (g_ID, d_i))``.

    >>> key_value_pairs(["S1", "G1"], ["sensor", "gateway"], ["G1", None], [0, 1])
    [('[:s]', ('S1', 'G1')), ('[:gw]', ('G1', 1))]
    """
    is_s = _kinds(kinds)
    d = _vector("degree", degree, integer=True)
    _same_length(node_ids=np.asarray(node_ids, dtype=object), kinds=is_s,
                 gateway_of=np.asarray(gateway_of, dtype=object), degree=d)
    out: list[tuple] = []
    for j, (nid, sensor, gw, dj) in enumerate(zip(node_ids, is_s, gateway_of, d)):
        if sensor and not gw:
            raise PoolingError(f"gateway_of[{j}] = {gw!r}: sensor {nid!r} needs its gateway's id (eq. 2)")
        out.append(("[:s]", (nid, gw)) if sensor else ("[:gw]", (nid, int(dj))))
    return out


def relation_counts(owned, observations, reading: str = "unique") -> np.ndarray:
    """Eq. (3)'s N_i: node i's relations revealed by the log up to t.

    ``owned[i]``: the relations of S and Gw that are node i's (:func:`topology_arrays`).
    ``"unique"``: ``N_i = owned_i`` once node i is seen (0 before); ``"occurrences"``: ``owned_i * c_i``.

    >>> relation_counts([2, 1, 2], [3, 1, 0]).tolist()
    [2, 1, 0]
    >>> relation_counts([2, 1, 2], [3, 1, 0], "occurrences").tolist()
    [6, 1, 0]
    """
    _choice("relation_count", reading, RELATION_COUNTS)
    r = _vector("owned", owned, integer=True)
    c = _vector("observations", observations, integer=True)
    _same_length(owned=r, observations=c)
    return (np.where(c > 0, r, 0) if reading == "unique" else r * c).astype(np.int64)


def priority(relations, presence, n_relations: int) -> np.ndarray:
    """Eq. (3): priority ``p_i = ⊥_i N_i / M`` of each node at time t (M: unique relations of S and Gw).

    As printed (``Σ_i N_i = M`` in the numerator) every active node would get
    p = 1, so N_i is the per-node count of :func:`relation_counts`.

    >>> priority([2, 1, 2], [1, 1, 0], 13).round(4).tolist()
    [0.1538, 0.0769, 0.0]
    """
    m = check_real("n_relations (M)", n_relations, low=0, low_open=True, error=PoolingError)
    N = _vector("relations", relations)
    perp = _vector("presence", presence, integer=True)
    _same_length(relations=N, presence=perp)
    if perp.size and perp.max() > 1:
        _first_bad("presence", perp, perp == perp.max(), "must be 0 or 1 (eq. 1)")
    return (perp * N) / m


def pool_bounds(priority_values, seen=None) -> tuple[float, float, float]:
    """Avg(p), Avg/2 and 3Avg/4 of eq. (4), over the seen nodes (all 0 when none is seen).

    The mean is exactly rounded (``math.fsum``) so every implementation draws the same boundaries.

    >>> pool_bounds([0.3, 0.1, 0.0, 0.9], [True, True, True, False])
    (0.13333333333333333, 0.06666666666666667, 0.1)
    """
    p, s = checked_seen("priority", priority_values, seen)
    if not s.any():
        return 0.0, 0.0, 0.0
    avg = math.fsum(p[s].tolist()) / int(s.sum())
    return avg, avg / 2.0, 3.0 * avg / 4.0


def assign_pools(priority_values, seen=None, band: str = "corrected", *,
                 bounds: tuple[float, float, float] | None = None) -> np.ndarray:
    """Eq. (4): the pool of each node (0 = P_H, 1 = P_M, 2 = P_L, -1 = none).

    As printed, ``P_M = {3Avg/4 <= p < Avg/2}`` is empty and nodes with
    ``Avg/2 < p <= 3Avg/4`` get no pool (``band="paper"``); ``"corrected"``
    puts them in P_M.  Unseen nodes get no pool and do not enter Avg.

    Over the four seen nodes Avg = 0.4, Avg/2 = 0.2, 3Avg/4 = 0.3:

    >>> assign_pools([1.1, 0.3, 0.2, 0.0, 0.5], [True, True, True, True, False]).tolist()
    [0, 1, 2, 2, -1]
    >>> assign_pools([1.1, 0.3, 0.2, 0.0, 0.5], [True, True, True, True, False], band="paper").tolist()
    [0, -1, 2, 2, -1]
    """
    _choice("band", band, BANDS)
    p, s = checked_seen("priority", priority_values, seen)
    _, half, three_q = pool_bounds(p, s) if bounds is None else bounds
    out = np.full(p.size, NO_POOL, dtype=np.int8)
    high, low = p > three_q, p <= half
    # as printed the medium band is 3Avg/4 <= p < Avg/2, empty because Avg/2 <= 3Avg/4
    mid = (~high & ~low) if band == "corrected" else (p >= three_q) & (p < half)
    out[low], out[mid], out[high] = 2, 1, 0
    out[~s] = NO_POOL
    return out


def _degrees(kinds, degree) -> tuple[np.ndarray, np.ndarray]:
    is_s = _kinds(kinds)
    d = _vector("degree", degree, integer=True)
    _same_length(kinds=is_s, degree=d)
    _first_bad("degree", d, is_s & (d != 0), "a sensor has d_i = 0 (only gateways have sensors)")
    if d.size == 0:
        raise PoolingError("kinds: the topology has no device nodes (n = 0)")
    return is_s, d


def _contributions(is_s: np.ndarray, d: np.ndarray, reading: str) -> np.ndarray:
    """Eq. (6)'s node terms; ``"sum_w"`` gives the eq. (5) weights."""
    return np.where(is_s, 1.0, d.astype(float)) / d.size if reading == "sum_w" else (1.0 + d) / d.size


def node_weights(kinds, degree) -> np.ndarray:
    """Eq. (5): node weight ``w_i = 1/n`` for a sensor, ``d_i/n`` for a gateway (n device nodes).

    >>> node_weights(["sensor", "sensor", "gateway"], [0, 0, 2]).round(4).tolist()
    [0.3333, 0.3333, 0.6667]
    """
    return _contributions(*_degrees(kinds, degree), "sum_w")


def pool_contributions(kinds, degree, reading: str = "degree") -> np.ndarray:
    """Each node's term u_i in eq. (6), so that ``W_p`` is their sum over the pool.

    The printed ``W_p = 1/n Σ_i 1 + d_i`` reads as ``u_i = (1 + d_i)/n``
    (``"degree"``) or as the eq. (5) weight w_i (``"sum_w"``): 1/n apart per gateway.

    >>> pool_contributions(["sensor", "gateway"], [0, 3]).tolist()
    [0.5, 2.0]
    >>> pool_contributions(["sensor", "gateway"], [0, 3], "sum_w").tolist()
    [0.5, 1.5]
    """
    _choice("pool_weight", reading, POOL_WEIGHTS)
    return _contributions(*_degrees(kinds, degree), reading)


def _terms(pools, contributions) -> tuple[np.ndarray, np.ndarray]:
    c = _codes("pools", pools, " of pool codes", NO_POOL, len(POOLS), "must be 0 (H), 1 (M), 2 (L) or -1 (no pool)")
    u = _vector("contributions", contributions)
    _same_length(pools=c, contributions=u)
    return c, u


def pool_weights(pools, contributions) -> np.ndarray:
    """Eq. (6): pool weights ``(W_H, W_M, W_L)``, ``W_p = Σ_{i∈p} u_i``; nodes in no pool add nothing.

    >>> pool_weights([0, 0, 2, -1], [0.25, 0.5, 0.25, 0.25]).tolist()
    [0.75, 0.0, 0.25]
    """
    c, u = _terms(pools, contributions)
    return np.bincount(c.astype(np.intp) + 1, weights=u, minlength=len(POOLS) + 1)[1:].astype(float)


def weight_matrix(pools, contributions) -> np.ndarray:
    """Eq. (6): ``W_C = ∪ W_{p_i}`` (3 x n): row p (P_H, P_M, P_L) holds u_i of the nodes in pool p, else 0.

    >>> weight_matrix([0, 2, -1], [0.5, 0.25, 0.25]).tolist()
    [[0.5, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.25, 0.0]]
    """
    c, u = _terms(pools, contributions)
    return np.where(c == np.arange(len(POOLS))[:, None], u.astype(float), 0.0)


def update_trigger(previous, new, reading: str = "nodes") -> np.ndarray:
    """Eq. (7): the update trigger α of each pool between two W_C matrices (3 x n, same node order).

    Printed ``α_i = |Δ(w_{p_i(t)} - w_{p_i(t+1)})|``.  ``"nodes"``: ``α_p = Σ_i |ΔW_C[p, i]|``, 0 exactly
    when no weighted node entered or left; ``"pool"``: ``α_p = |ΔW_p|``, blind to equal weights swapping pools.

    A sensor (1/4) leaves P_H for P_L while a gateway (1/2) moves M -> H:

    >>> before = [[0.25, 0.0], [0.0, 0.5], [0.0, 0.0]]
    >>> after = [[0.0, 0.5], [0.0, 0.0], [0.25, 0.0]]
    >>> update_trigger(before, after).tolist()
    [0.75, 0.5, 0.25]
    >>> update_trigger(before, after, "pool").tolist()
    [0.25, 0.5, 0.25]
    """
    _choice("alpha_reading", reading, ALPHA_READINGS)
    a, b = np.asarray(previous, dtype=float), np.asarray(new, dtype=float)
    for name, x in (("previous", a), ("new", b)):
        if x.ndim != 2 or x.shape[0] != len(POOLS):
            raise PoolingError(f"{name}: must be a W_C matrix of shape (3, n) (got shape {x.shape})")
    if a.shape != b.shape:
        raise PoolingError(f"lengths disagree: previous has shape {a.shape}, new has shape {b.shape}")
    out = np.abs(a.sum(axis=1) - b.sum(axis=1)) if reading == "pool" else np.abs(a - b).sum(axis=1)
    if not np.isfinite(out).all():  # a NaN or inf anywhere in either matrix ends up here
        raise PoolingError(f"{'previous' if not np.isfinite(a.sum()) else 'new'}: W_C holds a NaN or infinite value")
    return out


@dataclass(frozen=True)
class TopologyArrays:
    """The per-node inputs of Priority Pooling, read once from a ``Topology``."""

    node_ids: tuple[str, ...]  #: device nodes (sensors and gateways), in ``topology.devices()`` order
    kinds: np.ndarray  #: "sensor" or "gateway"
    gateway_of: tuple[str | None, ...]  #: a sensor's gateway (eq. 2), None for gateways
    degree: np.ndarray  #: d_i, the sensors connected to a gateway (0 for sensors)
    owned: np.ndarray  #: relations of S and Gw that are the node's (eq. 3's N_i once seen), by ``relation_owner``
    n_relations: int  #: M, the unique relations of S and Gw
    index: dict[str, int] = field(repr=False)  #: node id -> position
    relation_owner: str = _OWNER  #: whose relation is it: "head" (its head) or "incident" (head or tail)


def topology_arrays(topology: Topology, relation_owner: str = _OWNER) -> TopologyArrays:
    """Read the device nodes, d_i, owned relations and M of a topology (PoolingError when n or M is 0)."""
    _choice("relation_owner", relation_owner, RELATION_OWNERS)
    devices = topology.devices()
    if not devices:
        raise PoolingError(f"topology: has no device nodes (sensors or gateways) among its {len(topology.nodes)} "
                           "nodes; eqs. (3)-(6) need n >= 1")
    rels = sorted(set(topology.device_relations()))
    if not rels:
        raise PoolingError("topology: has no relations of S and Gw (M = 0); eq. (3) divides by M")
    ids = tuple(n.id for n in devices)
    index = {nid: k for k, nid in enumerate(ids)}
    owned = np.zeros(len(ids), dtype=np.int64)
    for r in rels:
        owned[index[r.head]] += 1
        if relation_owner == "incident" and r.tail in index:
            owned[index[r.tail]] += 1
    deg = topology.gateway_degrees()
    arrays = TopologyArrays(
        node_ids=ids, kinds=np.array([n.kind for n in devices]),
        gateway_of=tuple(n.gateway if n.kind == "sensor" else None for n in devices),
        degree=np.array([deg.get(n.id, 0) if n.kind == "gateway" else 0 for n in devices], dtype=np.int64),
        owned=owned, n_relations=len(rels), index=index, relation_owner=relation_owner)
    for a in (arrays.kinds, arrays.degree, arrays.owned):
        a.setflags(write=False)
    return arrays


def encode_instances(arrays: TopologyArrays, instances: Sequence[Instance]) -> tuple[np.ndarray, np.ndarray]:
    """Node positions and presence flags of log instances (PoolingError for a node that is no device)."""
    for inst in instances:
        if inst.node_id not in arrays.index:
            raise PoolingError(
                f"instance {inst.index}: node_id = {inst.node_id!r} is not a sensor or gateway of the topology")
    return (np.array([arrays.index[i.node_id] for i in instances], dtype=np.int64),
            np.array([bool(i.present) for i in instances], dtype=bool))


class PoolArrays(NamedTuple):
    """Everything eq. (1) and eqs. (3)-(6) give for one step, as arrays."""

    observations: np.ndarray  #: c_i, instances of node i so far
    seen: np.ndarray  #: c_i > 0
    presence: np.ndarray  #: ⊥_i, eq. (1)
    relations: np.ndarray  #: N_i, eq. (3)
    priority: np.ndarray  #: p_i, eq. (3)
    bounds: tuple[float, float, float]  #: Avg, Avg/2, 3Avg/4 of eq. (4)
    pools: np.ndarray  #: pool codes, eq. (4)
    weights: np.ndarray  #: w_i, eq. (5)
    contributions: np.ndarray  #: u_i, node terms of eq. (6)
    pool_weights: np.ndarray  #: (W_H, W_M, W_L), eq. (6)
    weight_matrix: np.ndarray  #: W_C, eq. (6)


def pool_arrays(observations, presence_values, kinds, degree, owned, n_relations: int, *, band: str = "corrected",
                pool_weight: str = "degree", relation_count: str = "unique") -> PoolArrays:
    """Eqs. (3)-(6) for all nodes at once, from per-node counts c_i and presence ⊥_i.

    >>> r = pool_arrays([1, 1, 0], [1, 1, 0], ["sensor", "gateway", "sensor"], [0, 1, 0], [2, 1, 2], 5)
    >>> r.priority.tolist(), r.pools.tolist(), r.pool_weights.round(4).tolist()
    ([0.4, 0.2, 0.0], [0, 1, -1], [0.3333, 0.6667, 0.0])
    """
    c = _vector("observations", observations, integer=True)
    perp = _vector("presence", presence_values, integer=True)
    _same_length(observations=c, presence=perp, kinds=np.asarray(kinds), degree=np.asarray(degree),
                 owned=np.asarray(owned))
    seen = c > 0
    _first_bad("presence", perp, ~seen & (perp != 0), "a node with no instance has presence 0 (eq. 1)")
    N = relation_counts(owned, c, relation_count)
    p = priority(N, perp, n_relations)
    bounds = pool_bounds(p, seen)
    pools = assign_pools(p, seen, band, bounds=bounds)
    _choice("pool_weight", pool_weight, POOL_WEIGHTS)
    is_s, d = _degrees(kinds, degree)  # validated once for eqs. (5) and (6)
    u = _contributions(is_s, d, pool_weight)
    return PoolArrays(observations=c, seen=seen, presence=perp.astype(np.int8), relations=N, priority=p,
                      bounds=bounds, pools=pools, weights=_contributions(is_s, d, "sum_w"), contributions=u,
                      pool_weights=pool_weights(pools, u), weight_matrix=weight_matrix(pools, u))


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.array(a, copy=True)
    a.setflags(write=False)
    return a


def _by_pool(values) -> dict[str, float]:
    return {lab: float(v) for lab, v in zip(POOLS, values)}


@dataclass(frozen=True)
class PoolSnapshot:
    """The pools, priorities and weights after one step (or of one log prefix); read-only arrays.

    ``pool`` holds ``"H"``, ``"M"``, ``"L"`` or None (unseen, or in the gap of the printed eq. (4)).
    """

    node_ids: tuple[str, ...]
    kinds: tuple[str, ...]
    gateway_of: tuple[str | None, ...]
    degree: np.ndarray  #: d_i
    observations: np.ndarray  #: c_i, the instances of the node so far
    seen: np.ndarray  #: the node has at least one instance
    presence: np.ndarray  #: ⊥_i, eq. (1)
    relations: np.ndarray  #: N_i, eq. (3)
    priority: np.ndarray  #: p_i, eq. (3)
    avg: float  #: Avg(p) over the seen nodes, eq. (4)
    pool: tuple[str | None, ...]  #: eq. (4)
    pool_codes: np.ndarray  #: 0/1/2 for H/M/L, -1 for none
    weights: np.ndarray  #: w_i, eq. (5)
    contributions: np.ndarray  #: node terms of eq. (6)
    pool_weight_values: dict[str, float]  #: W_p, eq. (6)
    weight_matrix: np.ndarray  #: W_C, eq. (6)
    n_relations: int  #: M
    n_instances: int  #: instances consumed so far
    band: str
    pool_weight: str
    alpha_reading: str
    relation_count: str
    relation_owner: str = _OWNER
    upto: int | None = None  #: instances with index < upto were used (None means all given)
    alpha: dict[str, float] | None = None  #: eq. (7) against the previous step, when there was one
    step: int | None = None
    version: int | None = None  #: pool version, bumped when some α > 0 (Algorithm 1 line 2)
    updated: bool | None = None

    @property
    def n(self) -> int:
        """Number of device nodes (the n of eqs. 5-6)."""
        return len(self.node_ids)

    @property
    def thresholds(self) -> tuple[float, float]:
        """(Avg/2, 3Avg/4) of eq. (4)."""
        return self.avg / 2.0, 3.0 * self.avg / 4.0

    def sizes(self) -> dict[str, int]:
        """Number of nodes in each pool."""
        return {lab: int((self.pool_codes == k).sum()) for k, lab in enumerate(POOLS)}

    def table(self):
        """One row per node with its eqs. (1)-(6) values and presence state (a ``pandas.DataFrame``)."""
        import pandas as pd

        kv = key_value_pairs(self.node_ids, list(self.kinds), self.gateway_of, self.degree)
        state = np.where(~self.seen, "never seen",
                         np.where(self.presence == 1, "active (⊥ = 1)", "inactive (⊥ = 0)"))
        return pd.DataFrame({
            "node": self.node_ids, "kind": self.kinds, "k": [k for k, _ in kv], "v": [str(v) for _, v in kv],
            "instances": self.observations, "presence": self.presence, "state": state, "N": self.relations,
            "p": self.priority, "pool": [p if p is not None else "none" for p in self.pool], "w": self.weights,
            "u": self.contributions,
        })


def alpha(prev: PoolSnapshot, new: PoolSnapshot, reading: str | None = None) -> dict[str, float]:
    """Eq. (7): the update trigger α of each pool from ``prev`` to ``new``, as ``{"H": α_H, ...}``.

    Nodes are matched by id (one deleted or added leaves or enters its pool);
    both snapshots must use the same eq. (6) reading.
    """
    reading = _choice("reading", new.alpha_reading if reading is None else reading, ALPHA_READINGS)
    if prev.pool_weight != new.pool_weight:
        raise PoolingError(f"pool_weight: prev uses {prev.pool_weight!r} and new uses {new.pool_weight!r}; "
                           "α compares weights of the same eq. (6) reading")
    pos = {nid: k for k, nid in enumerate(dict.fromkeys(prev.node_ids + new.node_ids))}  # the union of the nodes
    a, b = np.zeros((len(POOLS), len(pos))), np.zeros((len(POOLS), len(pos)))
    a[:, [pos[i] for i in prev.node_ids]] = prev.weight_matrix
    b[:, [pos[i] for i in new.node_ids]] = new.weight_matrix
    return _by_pool(update_trigger(a, b, reading))


class PriorityPool:
    """Algorithm 1, lines 1-8: Priority Pooling over a stream of log instances.

    Line 1: empty pools, ``α = 0``.  Each :meth:`step` runs lines 3-7 on the
    next window; line 2: when some α > 0 the new pools become current and
    ``version`` is bumped.  Steps are kept in ``history``.

    >>> from gentwin.config import TopologyConfig
    >>> ds = generate_dataset(TopologyConfig(n_gateways=6, n_sensors=24, n_gateway_links=3, n_instances=60))
    >>> snaps = PriorityPool(ds.topology).run(ds.instances, window=20)
    >>> [s.step for s in snaps], snaps[-1].n_instances
    ([1, 2, 3], 60)
    """

    def __init__(self, topology: Topology, *, band: str = "corrected", pool_weight: str = "degree",
                 alpha_reading: str = "nodes", relation_count: str = "unique",
                 relation_owner: str = _OWNER) -> None:
        #: the readings this pool runs with, as keyword arguments
        self.readings = dict(band=_choice("band", band, BANDS),
                             pool_weight=_choice("pool_weight", pool_weight, POOL_WEIGHTS),
                             alpha_reading=_choice("alpha_reading", alpha_reading, ALPHA_READINGS),
                             relation_count=_choice("relation_count", relation_count, RELATION_COUNTS),
                             relation_owner=relation_owner)
        self.arrays = topology_arrays(topology, relation_owner)
        n = len(self.arrays.node_ids)
        self._counts = np.zeros(n, dtype=np.int64)
        self._presence = np.zeros(n, dtype=np.int8)
        self._last_index: int | None = None
        self._n_instances = 0
        self._current_wc = np.zeros((len(POOLS), n))  # line 1: empty pools
        self.version = 0
        self.history: list[PoolSnapshot] = []

    def step(self, instances: Sequence[Instance], *, upto: int | None = None) -> PoolSnapshot:
        """Consume one window of instances and run Algorithm 1 lines 2-7."""
        instances = list(instances)
        prev = self._last_index
        for inst in instances:
            if prev is not None and inst.index <= prev:
                raise PoolingError(
                    f"instances: index {inst.index} comes after index {prev}; the stream must be in time order")
            prev = inst.index
        a, r = self.arrays, self.readings
        idx, pres = encode_instances(a, instances)
        if idx.size:
            n = len(a.node_ids)
            self._counts += observation_counts(idx, n)
            self._presence[idx] = presence(idx, pres, n)[idx]
            self._last_index = prev
            self._n_instances += idx.size
        res = pool_arrays(self._counts, self._presence, a.kinds, a.degree, a.owned, a.n_relations, band=r["band"],
                          pool_weight=r["pool_weight"], relation_count=r["relation_count"])
        al = update_trigger(self._current_wc, res.weight_matrix, r["alpha_reading"])
        updated = bool((al > 0).any())
        if updated:
            self.version += 1
            self._current_wc = res.weight_matrix
        snap = PoolSnapshot(
            node_ids=a.node_ids, kinds=tuple(a.kinds.tolist()), gateway_of=a.gateway_of, degree=_frozen(a.degree),
            observations=_frozen(res.observations), seen=_frozen(res.seen), presence=_frozen(res.presence),
            relations=_frozen(res.relations), priority=_frozen(res.priority), avg=float(res.bounds[0]),
            pool=tuple(POOLS[k] if k >= 0 else None for k in res.pools.tolist()), pool_codes=_frozen(res.pools),
            weights=_frozen(res.weights), contributions=_frozen(res.contributions),
            pool_weight_values=_by_pool(res.pool_weights), weight_matrix=_frozen(res.weight_matrix),
            n_relations=a.n_relations, n_instances=self._n_instances, upto=upto, **r, alpha=_by_pool(al),
            step=len(self.history) + 1, version=self.version, updated=updated)
        self.history.append(snap)
        return snap

    def run(self, instances: Sequence[Instance], window: int, *, show: bool = False) -> list[PoolSnapshot]:
        """Step through ``instances`` in windows of ``window`` instances (a progress bar when ``show``)."""
        window = check_int("window", window, low=1, error=PoolingError)
        items = list(instances)
        bar = progress(range(0, len(items), window), desc="priority pooling", disable=not show, leave=False)
        return [self.step(chunk, upto=chunk[-1].index + 1) for chunk in (items[s:s + window] for s in bar)]


def pool_snapshot(dataset: DataSet, upto: int | None = None, **readings: str) -> PoolSnapshot:
    """Eqs. (1)-(6) from the instances of ``dataset`` with index < ``upto`` (all when None); ``alpha`` is None.

    With the corrected band the pools partition the seen nodes:

    >>> from gentwin.config import TopologyConfig
    >>> snap = pool_snapshot(generate_dataset(TopologyConfig(n_gateways=6, n_sensors=24, n_gateway_links=3,
    ...                                                      n_instances=60)))
    >>> snap.n_relations, len(snap.node_ids), sum(snap.sizes().values()) == int(snap.seen.sum())
    (57, 30, True)
    """
    if upto is not None:
        check_int("upto", upto, low=0, error=PoolingError)
    chosen = sorted((i for i in dataset.instances if upto is None or i.index < upto), key=lambda i: i.index)
    snap = PriorityPool(dataset.topology, **readings).step(chosen, upto=upto)
    return replace(snap, alpha=None, step=None, version=None, updated=None)


def training_order(dataset: DataSet, instances: Sequence[Instance], by: str, seed: int,
                   **readings: str) -> list[Instance]:
    """The given instances reordered for training by the pools of eqs. (4)-(6).

    ``"priority"``: P_H, P_M, P_L, no pool, each by p descending; ``"weight"``: pools by W_p
    descending (ties H, M, L), no pool last, each by w_i descending; ``"random"``: a permutation.
    Ties follow a permutation drawn from ``seed``.  The pools come from ``instances`` only.

    >>> from gentwin.config import TopologyConfig
    >>> ds = generate_dataset(TopologyConfig(n_gateways=6, n_sensors=24, n_gateway_links=3, n_instances=60))
    >>> train = ds.split("train")
    >>> ordered = training_order(ds, train, by="priority", seed=0)
    >>> sorted(i.index for i in ordered) == sorted(i.index for i in train)
    True
    """
    _choice("by", by, ORDERS)
    items = list(instances)
    if not items:
        return []
    pp = PriorityPool(dataset.topology, **readings)
    snap = pp.step(sorted(items, key=lambda i: i.index))
    rng = np.random.default_rng(check_int("seed", seed, error=PoolingError))
    if by == "random":
        return [items[k] for k in rng.permutation(len(items))]
    idx, _ = encode_instances(pp.arrays, items)
    tie = rng.permutation(len(items))
    codes = snap.pool_codes[idx].astype(np.int64)
    if by == "priority":
        rank = np.where(codes >= 0, codes, len(POOLS))  # H, M, L, then no pool
        key = -snap.priority[idx]
    else:
        W = np.array([snap.pool_weight_values[lab] for lab in POOLS])
        pool_rank = np.argsort(np.argsort(-W, kind="stable"))  # W_p descending, ties in H, M, L order
        rank = np.where(codes >= 0, pool_rank[np.maximum(codes, 0)], len(POOLS))
        key = -snap.weights[idx]
    return [items[k] for k in np.lexsort((tie, key, rank))]

