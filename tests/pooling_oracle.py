"""Plain-Python oracles for gentwin.pooling: per-node loops over eqs. (1), (3)-(7), written without numpy.

They are independent of the vectorised functions so that tests/test_pooling.py
and benchmarks/pooling.py can check that both give identical pools.
"""

from __future__ import annotations

import math
from typing import Sequence

NO_POOL = -1  # the code of a node in no pool, as in gentwin.pooling


def reference_pools(
    node_index: Sequence[int],
    present: Sequence[bool],
    kinds: Sequence[str],
    degree: Sequence[int],
    owned: Sequence[int],
    n_relations: int,
    band: str = "corrected",
    pool_weight: str = "degree",
    relation_count: str = "unique",
) -> dict:
    """Plain per-node Python loops over eqs. (1), (3)-(6): the cross-check.

    Written independently of the vectorised functions (no numpy) so that tests
    and ``benchmarks/pooling.py`` can compare both; it must give identical pools.
    """
    n = len(kinds)
    counts = [0] * n
    last = [0] * n
    for k, i in enumerate(node_index):  # eq. (1): latest presence wins
        counts[i] += 1
        last[i] = 1 if present[k] else 0
    prio = [0.0] * n
    for i in range(n):  # eq. (3)
        if counts[i] == 0:
            N = 0
        elif relation_count == "unique":
            N = owned[i]
        else:
            N = owned[i] * counts[i]
        prio[i] = (last[i] * N) / float(n_relations)
    seen_p = [prio[i] for i in range(n) if counts[i] > 0]
    avg = math.fsum(seen_p) / len(seen_p) if seen_p else 0.0
    half, three_q = avg / 2.0, 3.0 * avg / 4.0
    pools = [NO_POOL] * n
    for i in range(n):  # eq. (4)
        if counts[i] == 0:
            continue
        if prio[i] > three_q:
            pools[i] = 0
        elif prio[i] <= half:
            pools[i] = 2
        elif band == "corrected":
            pools[i] = 1
    W = [0.0, 0.0, 0.0]
    wc = [[0.0] * n for _ in range(3)]
    weights = [0.0] * n
    for i in range(n):  # eqs. (5)-(6)
        d = degree[i] if kinds[i] == "gateway" else 0
        weights[i] = (1.0 if kinds[i] == "sensor" else float(d)) / n
        u = weights[i] if pool_weight == "sum_w" else (1.0 + d) / n
        if pools[i] >= 0:
            W[pools[i]] += u
            wc[pools[i]][i] = u
    return {"presence": last, "observations": counts, "priority": prio, "pools": pools, "weights": weights,
            "pool_weights": W, "weight_matrix": wc}


def reference_alpha(previous: Sequence[Sequence[float]], new: Sequence[Sequence[float]],
                     reading: str = "nodes") -> list[float]:
    """Eq. (7) with plain loops over the rows of two W_C matrices (the cross-check)."""
    out = []
    for row_a, row_b in zip(previous, new):
        if reading == "pool":
            out.append(abs(sum(row_a) - sum(row_b)))
        else:
            total = 0.0
            for x, y in zip(row_a, row_b):
                total += abs(x - y)
            out.append(total)
    return out

