"""Scaling of Priority Pooling (eqs. 1, 3-7): vectorised numpy versus a per-node Python loop.

For n = 10^3 ... 10^6 device nodes this builds a synthetic topology with the
paper's proportions (1 gateway per 5 sensors, 10/3 log instances per node,
10 % of instances inactive) as arrays, then times one full Priority Pooling step
from the raw log: presence (eq. 1), N_i and priorities (eq. 3), pools (eq. 4),
node and pool weights and W_C (eqs. 5-6) and α against the previous step
(eq. 7).  The same step is timed with the plain per-node loops of
``tests/pooling_oracle.py`` (``reference_pools`` / ``reference_alpha``); both must give
identical pools (and the same priorities, weights and α), which is checked
wherever both ran.

Usage::

    python benchmarks/pooling.py                  # n = 10^3, 10^4, 10^5, 10^6
    python benchmarks/pooling.py --sizes 1000 10000 --loop-max 10000 --repeats 3

Times are the best of ``--repeats`` runs (wall clock, ``time.perf_counter``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from gentwin.pooling import (
    observation_counts,
    pool_arrays,
    presence,
    update_trigger,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the plain-loop oracles live with the tests
from pooling_oracle import reference_alpha, reference_pools  # noqa: E402

TARGET_S = 1.0  # the target for 10^6 nodes on the 2-core machine


def synthetic(n: int, seed: int = 0) -> dict:
    """Arrays of a topology with n device nodes and its log (paper proportions)."""
    rng = np.random.default_rng(seed)
    n_g = max(1, n // 6)
    n_s = n - n_g
    kinds = np.array(["gateway"] * n_g + ["sensor"] * n_s)
    owners = rng.integers(0, n_g, size=n_s)
    degree = np.concatenate([np.bincount(owners, minlength=n_g), np.zeros(n_s, dtype=np.int64)])
    # own relations: sensor -> gateway, sensor -> service; gateway -> service plus 0-2 fog links
    owned = np.concatenate([1 + rng.integers(0, 3, size=n_g), np.full(n_s, 2)])
    m = (10 * n) // 3
    node_index = rng.integers(0, n, size=m)
    present = rng.random(m) >= 0.1
    return dict(kinds=kinds, degree=degree, owned=owned, M=int(owned.sum()), node_index=node_index, present=present)


def vectorised_step(d: dict, prev_wc: np.ndarray, upto: int):
    n = d["kinds"].size
    idx, pres = d["node_index"][:upto], d["present"][:upto]
    res = pool_arrays(observation_counts(idx, n), presence(idx, pres, n), d["kinds"], d["degree"], d["owned"],
                      d["M"])
    return res, update_trigger(prev_wc, res.weight_matrix, "nodes")


def loop_step(lists: dict, prev_wc: list, upto: int):
    ref = reference_pools(lists["node_index"][:upto], lists["present"][:upto], lists["kinds"], lists["degree"],
                           lists["owned"], lists["M"])
    return ref, reference_alpha(prev_wc, ref["weight_matrix"], "nodes")


def best_of(fn, repeats: int):
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10**3, 10**4, 10**5, 10**6])
    ap.add_argument("--loop-max", type=int, default=10**6,
                    help="largest n for which the per-node loop is also run (it is slow)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)

    print(f"Priority Pooling step (eqs. 1, 3-7) from a raw log of 10/3 instances per node; best of {args.repeats}")
    header = (f"{'n':>9} {'instances':>10} {'numpy s':>9} {'numpy us/node':>14} {'loop s':>9} "
              f"{'loop us/node':>13} {'ratio':>7}  identical pools")
    print(header)
    print("-" * len(header))
    results = {}
    all_same = True
    for n in args.sizes:
        d = synthetic(n)
        m = d["node_index"].size
        upto = m - max(1, m // 20)  # the previous step saw all but the last 5 % of the log
        prev, _ = vectorised_step(d, np.zeros((3, n)), upto)
        t_vec, (res, al) = best_of(lambda: vectorised_step(d, prev.weight_matrix, m), args.repeats)
        row = dict(n=n, m=m, vec=t_vec, loop=None, same=None)
        if n <= args.loop_max:
            lists = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in d.items()}
            prev_ref = reference_pools(lists["node_index"][:upto], lists["present"][:upto], lists["kinds"],
                                        lists["degree"], lists["owned"], lists["M"])
            t_loop, (ref, al_ref) = best_of(lambda: loop_step(lists, prev_ref["weight_matrix"], m),
                                            1 if n >= 10**5 else args.repeats)
            same = (res.pools.tolist() == ref["pools"] and res.priority.tolist() == ref["priority"]
                    and np.allclose(res.pool_weights, ref["pool_weights"]) and np.allclose(al, al_ref))
            row.update(loop=t_loop, same=same)
            all_same &= same
        results[n] = row
        loop_s = f"{row['loop']:9.3f}" if row["loop"] is not None else f"{'not run':>9}"
        loop_us = f"{1e6 * row['loop'] / n:13.3f}" if row["loop"] is not None else f"{'-':>13}"
        ratio = f"{row['loop'] / t_vec:6.0f}x" if row["loop"] is not None else f"{'-':>7}"
        same_s = {True: "yes", False: "NO", None: "(loop not run)"}[row["same"]]
        print(f"{n:9d} {m:10d} {t_vec:9.4f} {1e6 * t_vec / n:14.3f} {loop_s} {loop_us} {ratio}  {same_s}")
        sys.stdout.flush()

    skipped = [n for n in args.sizes if results[n]["loop"] is None]
    if skipped:
        print(f"\nThe per-node loop was not run for n = {', '.join(map(str, skipped))} (--loop-max {args.loop_max}).")
    big = max(args.sizes)
    r = results[big]
    note = f"\nClosing note: {big} nodes in {r['vec']:.3f} s (target <= {TARGET_S:.0f} s for 10^6: "
    note += ("met" if big < 10**6 or r["vec"] <= TARGET_S else "NOT met") + ")"
    if r["loop"] is not None:
        note += f"; the per-node loop takes {r['loop']:.2f} s, {r['loop'] / r['vec']:.0f}x longer"
    else:
        measured = [n for n in args.sizes if results[n]["loop"] is not None]
        if measured:
            k = max(measured)
            note += f"; at n = {k} the loop is {results[k]['loop'] / results[k]['vec']:.0f}x slower"
    print(note + ".")
    per_node = [1e6 * results[n]["vec"] / n for n in args.sizes]
    print(f"numpy time per node from n = {min(args.sizes)} to {big}: "
          f"{', '.join(f'{x:.3f}' for x in per_node)} us")
    if not all_same:
        print("ERROR: the vectorised and loop implementations disagree", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
