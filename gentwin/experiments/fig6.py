"""Fig. 6: relations extracted per training round, with and without Priority Pooling, and the pooling gain."""

from __future__ import annotations

import math
from typing import Any, Sequence

import pandas as pd

from ..config import TrainingConfig
from ..metrics import bootstrap_ci, compare_graph, min_detectable_effect, pooling_gain
from ..progress import progress as progress_bar
from ..topology import Instance
from ..training import (TrainingError, TwinTask, load_adapter_state, predict_triples, reset_adapters,
                        train_trajectory)
from .pipeline import retask, run_seeds, stream_order, training_instances

__all__ = ["ORDER_LABELS", "MEASURES", "round_slices", "extraction_curve", "runs", "variant_orders", "variant_runs",
           "gains", "gain_table", "variant_table", "headline", "curve_bands", "first_chunks"]

#: How the chapter names each order.
ORDER_LABELS = {"priority": "with pooling: selection by priority", "weight": "with pooling: selection by weight",
                "random": "without pooling (random order)"}
#: What a gain is computed on: column of the curves, and how the chapter names it.
MEASURES = {"extracted": "all relations", "extracted_inferred": "relations that must be inferred"}


def round_slices(n: int, rounds: int, mode: str = "cumulative") -> list[tuple[int, int]]:
    """Which part ``[start, end)`` of an ``n``-instance stream each round trains on: the stream is cut into
    ``rounds`` (nearly) equal chunks; ``"cumulative"`` round r passes over chunks 1..r, ``"chunk"`` over chunk r.
    """
    if n < 1:
        raise TrainingError(f"n = {n}: the training stream is empty")
    if rounds < 1 or rounds > n:
        raise TrainingError(f"rounds = {rounds}: must be between 1 and the {n} training instances")
    if mode not in ("cumulative", "chunk"):
        raise TrainingError(f"round_mode = {mode!r}: must be 'cumulative' or 'chunk'")
    ends = [int(math.ceil(n * (r + 1) / rounds)) for r in range(rounds)]
    return list(zip([0] * rounds if mode == "cumulative" else [0] + ends[:-1], ends))


def extraction_curve(model, task: TwinTask, order: Sequence[Instance], config: TrainingConfig, *, seed: int,
                     rounds: int | None = None, round_mode: str | None = None, eval_mode: str | None = None,
                     progress: bool = False, step_cache=None):
    """Fig. 6: unique correct triples over the whole topology after each training round (Algorithm 1 lines 9-11).

    Round r trains one pass over :func:`round_slices`' part of ``order`` (shuffled with ``seed`` when
    ``shuffle_passes`` is on), the rate decaying by ``discount_factor`` per round.  Columns ``round, seed, fed,
    train_loss, extracted`` (true relations produced), ``extracted_copyable``, ``extracted_inferred``
    (``task.copyable`` or not), ``produced, precision, recall``.
    """
    items = list(order)
    if not items:
        raise TrainingError("order = []: the training split is empty; nothing to train on")
    rows = task.rows(items)
    truth = set(task.dataset.topology.device_relations())
    copyable = set().union(*task.copyable) if task.copyable is not None else set()
    slices = round_slices(len(rows), config.rounds if rounds is None else int(rounds),
                          config.round_mode if round_mode is None else round_mode)
    trajectory = train_trajectory(model, task, [rows[a:b] for a, b in slices], config, seed=seed, desc="rounds",
                                  progress=progress, step_cache=step_cache)
    records = []
    for r, step in enumerate(trajectory[1:], start=1):
        load_adapter_state(model, step["state"])
        produced, _ = predict_triples(model, task, list(range(len(task.node_ids))),
                                      mode=config.eval_mode if eval_mode is None else eval_mode,
                                      batch_size=config.eval_batch_size)
        graph = set().union(*produced)
        cmp = compare_graph(graph, truth)
        n_copy = len(graph & truth & copyable)
        records.append(dict(round=r, seed=seed, fed=slices[r - 1][1], train_loss=step["train_loss"],
                            extracted=cmp["correct"], extracted_copyable=n_copy,
                            extracted_inferred=cmp["correct"] - n_copy, produced=cmp["produced"],
                            precision=cmp["precision"], recall=cmp["recall"]))
    return pd.DataFrame(records)


def runs(model, task: TwinTask, settings, *, orders: Sequence[str] | None = None, seeds: Sequence[int] | None = None,
         round_mode: str | None = None, progress: bool = False, step_cache=None):
    """:func:`extraction_curve` for every order (default ``fig6_orders``) and seed (default
    :func:`~gentwin.experiments.pipeline.run_seeds`), every order of a seed starting from the same adapters:
    one table with columns ``order, seed, round, extracted, ...``."""
    cfg = settings.training
    orders = tuple(cfg.fig6_orders if orders is None else orders)
    if "random" not in orders:
        raise TrainingError(f"fig6_orders = {orders!r}: must include 'random' (no pooling)")
    train = training_instances(task.dataset, cfg)
    curves = []
    plan = [(by, seed) for seed in (run_seeds(cfg) if seeds is None else seeds) for by in orders]
    for by, seed in progress_bar(plan, desc="order x seed", disable=not progress, leave=False):
        reset_adapters(model, seed)
        order = stream_order(settings, task.dataset, train, by, seed)
        curve = extraction_curve(model, task, order, cfg, seed=seed, round_mode=round_mode, progress=progress,
                                 step_cache=step_cache)
        curve.insert(0, "order", by)
        curves.append(curve)
    return pd.concat(curves, ignore_index=True)


def variant_orders(config: TrainingConfig) -> list[tuple[str, tuple[str, ...]]]:
    """``(variant, orders)`` of each of ``fig6_variants``: the first (the headline) runs every order of
    ``fig6_orders``, the others priority and random only."""
    return [(v, tuple(config.fig6_orders) if k == 0 else ("priority", "random"))
            for k, v in enumerate(config.fig6_variants)]


def variant_runs(model, task: TwinTask, settings, *, progress: bool = False, step_cache=None):
    """:func:`runs` for every ``"round_mode/id_style"`` of ``fig6_variants`` on the paired seeds ``train_seed ..
    train_seed + fig6_seeds - 1``, with a ``variant`` column in front.

    Each variant runs the orders :func:`variant_orders` gives; another id style gets its own task
    (:func:`~gentwin.experiments.pipeline.retask`).
    """
    cfg = settings.training
    seeds = list(range(cfg.train_seed, cfg.train_seed + cfg.fig6_seeds))
    tasks, out = {}, []
    for variant, orders in variant_orders(cfg):
        round_mode, id_style = variant.split("/")
        if id_style not in tasks:
            tasks[id_style] = retask(model, task, settings, id_style, progress=progress, step_cache=step_cache)
        curves = runs(model, tasks[id_style], settings, orders=orders, seeds=seeds, round_mode=round_mode,
                      progress=progress, step_cache=step_cache)
        curves.insert(0, "variant", variant)
        out.append(curves)
    return pd.concat(out, ignore_index=True)


def gains(curves, baseline: str = "random", *, measure: str = "extracted", at_round: int | None = None):
    """Per-seed :func:`gentwin.metrics.pooling_gain` of every order in ``curves`` against ``baseline`` (same seed).

    On ``measure`` (:data:`MEASURES`) over all rounds (the areas under the curves) or, with ``at_round = k``, at
    round k only (the budget variant).  Columns ``order, seed, gain_pct``, NaN where the baseline extracted
    nothing.
    """
    if baseline not in set(curves["order"]):
        raise TrainingError(f"baseline = {baseline!r}: not among the orders {sorted(set(curves['order']))}")
    rows = []
    for (order, seed), sub in curves.groupby(["order", "seed"], sort=False):
        if order == baseline:
            continue
        base = curves[(curves["order"] == baseline) & (curves["seed"] == seed)].sort_values("round")
        mine = sub.sort_values("round")
        if base.empty or base["round"].tolist() != mine["round"].tolist():
            raise TrainingError(f"curves: seed {seed} has no matching {baseline!r} curve over the same rounds")
        if at_round is not None:
            if at_round not in set(base["round"]):
                raise TrainingError(f"budget_rounds = {at_round}: the curves have rounds {sorted(set(base['round']))}")
            base, mine = base[base["round"] == at_round], mine[mine["round"] == at_round]
        gain = pooling_gain(mine[measure].to_numpy(), base[measure].to_numpy()) if base[measure].sum() > 0 else math.nan
        rows.append({"order": order, "seed": int(seed), "gain_pct": gain})
    return pd.DataFrame(rows, columns=["order", "seed", "gain_pct"])


def gain_table(curves, confidence: float, paper_text: str = "", *, measure: str = "extracted",
               at_round: int | None = None):
    """Per order (:data:`ORDER_LABELS`): mean pooling gain over the paired seeds that have one, its
    percentile-bootstrap interval ``low``, ``high`` (resampled means, so it stays above -100 %), ``seeds``,
    ``MDE (%)`` (:func:`gentwin.metrics.min_detectable_effect`) and ``paper (reference)``."""
    rows = []
    for order, sub in gains(curves, measure=measure, at_round=at_round).groupby("order", sort=False):
        vals = sub["gain_pct"].dropna()
        m, lo, hi = bootstrap_ci(vals, confidence)
        rows.append({"order": ORDER_LABELS[order], "mean gain (%)": m, "low": lo, "high": hi, "seeds": len(vals),
                     "MDE (%)": min_detectable_effect(vals)})
    table = pd.DataFrame(rows, columns=["order", "mean gain (%)", "low", "high", "seeds", "MDE (%)"])
    table["paper (reference)"] = paper_text
    return table


def variant_table(curves, confidence: float, budget_rounds: int):
    """:func:`gain_table` per variant, measure and scoring (the average over all rounds, and round
    ``budget_rounds`` alone) of :func:`variant_runs`' curves; the first row is the headline."""
    rounds = int(curves["round"].max())
    if not 1 <= budget_rounds < rounds:
        raise TrainingError(f"budget_rounds = {budget_rounds}: must be at least 1 and below the {rounds} rounds")
    parts = []
    for variant, sub in curves.groupby("variant", sort=False):
        for measure, what in MEASURES.items():
            for at, scoring in ((None, f"average over {rounds} rounds"), (budget_rounds, f"at round {budget_rounds}")):
                t = gain_table(sub.drop(columns="variant"), confidence, measure=measure, at_round=at)
                t.insert(0, "variant", variant)
                t.insert(2, "relations", what)
                t.insert(3, "scoring", scoring)
                parts.append(t.drop(columns="paper (reference)"))
    return pd.concat(parts, ignore_index=True)


def headline(curves, table, rounds: int) -> dict[str, Any]:
    """The chapter's glued values: the priority order's gain (mean, interval, seeds, MDE, or a note why there
    is none) and the mean relations extracted after the last round with priority and random order."""
    head = table[table["order"] == ORDER_LABELS["priority"]]
    if len(head) and head["seeds"].iloc[0] > 0:
        h = head.iloc[0]
        out: dict[str, Any] = dict(
            fig6_gain_pct=float(h["mean gain (%)"]), fig6_gain_pct_low=float(h["low"]),
            fig6_gain_pct_high=float(h["high"]), fig6_gain_pct_n=int(h["seeds"]), fig6_gain_mde=float(h["MDE (%)"]),
            fig6_gain_text=f"{h['mean gain (%)']:+.1f} %")
    else:
        out = dict(fig6_gain_mde=math.nan,
                   fig6_gain_pct_note="the run without pooling extracted no relation in any round, so no gain "
                   "can be computed (the quick profile trains too little for that)",
                   fig6_gain_text="undefined (nothing was extracted without pooling)")
    last = curves[curves["round"] == rounds].groupby("order")
    for measure, suffix in (("extracted", ""), ("extracted_inferred", "_inferred")):
        if measure in curves:
            final = last[measure].mean()
            out[f"fig6_final_random{suffix}"] = float(final.get("random", math.nan))
            out[f"fig6_final_priority{suffix}"] = float(final.get("priority", math.nan))
    return out


def curve_bands(curves, measure: str, confidence: float):
    """Mean and percentile-bootstrap band over seeds of ``measure`` per order and round (the plotted curves;
    resampled means, so the band never goes below 0)."""
    return pd.DataFrame([dict(zip(("order", "round", "mean", "low", "high", "n"),
                                  (order, rnd, *bootstrap_ci(sub[measure], confidence), len(sub))))
                         for (order, rnd), sub in curves.groupby(["order", "round"], sort=False)])


def first_chunks(settings, dataset):
    """Per order of ``fig6_orders`` (seed ``train_seed``): what the first round's chunk holds (instances,
    sensors, gateways, distinct nodes and their true relations)."""
    cfg = settings.training
    train = training_instances(dataset, cfg)
    rows = []
    for by in cfg.fig6_orders:
        head = stream_order(settings, dataset, train, by, cfg.train_seed)[:int(round(len(train) / cfg.rounds))]
        kinds = [dataset.topology.nodes[i.node_id].kind for i in head]
        rows.append({"order": ORDER_LABELS[by], "instances": len(head), "sensors": kinds.count("sensor"),
                     "gateways": kinds.count("gateway"), "distinct nodes": len({i.node_id for i in head}),
                     "true relations of those nodes": len({r for i in head
                                                           for r in dataset.topology.relations_of(i.node_id)})})
    return pd.DataFrame(rows).set_index("order")
