"""What the paper-profile Fig. 6 and Fig. 7 designs cost on this machine: measured unit costs times the design's counts.

One run measures, on the paper profile's task (SmolLM2, the paper's 700 training instances, batch 32,
cached frozen part, the profile's compute type and thread count):

* the seconds of one training epoch (700 instances),
* the seconds of one teacher-forced read-out over every device node (what each Fig. 6 round and each
  Fig. 7 epoch evaluation costs, roughly),

then multiplies them by what the profile's settings ask for: Fig. 6 trains ``fig6_seeds`` paired seeds per
order and variant (a cumulative round r is one pass over r/rounds of the stream, so a cumulative run is
about (rounds + 1) / 2 epochs; a chunk run is one epoch), Fig. 7 trains ``fig7_arms`` x ``n_seeds`` x
``epochs`` epochs.  Printed: the projection per figure, the total against a budget (40 min by default), and
the smallest design the comparisons need (Fig. 6: priority and random, ``fig6_seeds`` seeds, the headline
variant; Fig. 7: two arms, ``n_seeds`` seeds, ``epochs`` epochs).  Greedy decoding, the line-14 pass and
the other chapters are not in the projection, so it is a lower bound.

    .venv/bin/python benchmarks/paper_budget.py
    .venv/bin/python benchmarks/paper_budget.py --budget-min 40 --profile paper
"""

from __future__ import annotations

import argparse
import time


def design_epochs(settings) -> dict[str, float]:
    """Training epochs (passes over the whole training stream) and read-outs each design asks for.

    >>> from gentwin.config import resolve
    >>> d = design_epochs(resolve("paper"))
    >>> d["fig7_epochs"], d["fig7_minimum_epochs"]   # 3 arms x 5 seeds x 60; 2 arms x 5 x 60
    (900.0, 600.0)
    >>> d["fig6_minimum_epochs"]   # 2 orders x 8 seeds x (18 + 1) / 2
    152.0
    """
    from gentwin.experiments.fig6 import variant_orders

    t = settings.training
    cumulative = (t.rounds + 1) / 2
    per_run = {"cumulative": cumulative, "chunk": 1.0}
    fig6 = fig6_reads = 0.0
    for variant, orders in variant_orders(t):
        fig6 += len(orders) * t.fig6_seeds * per_run[variant.split("/")[0]]
        fig6_reads += len(orders) * t.fig6_seeds * t.rounds
    runs7 = len(t.fig7_arms) * t.n_seeds
    return {"fig6_epochs": fig6, "fig6_reads": fig6_reads,
            "fig6_minimum_epochs": 2 * t.fig6_seeds * per_run[t.fig6_variants[0].split("/")[0]],
            "fig7_epochs": float(runs7 * t.epochs), "fig7_reads": float(runs7 * (t.epochs + 1)),
            "fig7_minimum_epochs": float(2 * t.n_seeds * t.epochs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="paper", choices=("paper", "quick"))
    parser.add_argument("--budget-min", type=float, default=40.0, help="the budget to compare with (minutes)")
    args = parser.parse_args()

    from gentwin.config import resolve
    from gentwin.experiments import pipeline
    from gentwin.training import evaluate, train_trajectory

    settings = resolve(args.profile)
    t0 = time.perf_counter()
    model, _, dataset, task = pipeline.setup_twin(settings)
    setup_s = time.perf_counter() - t0
    train = pipeline.training_instances(dataset, settings.training)
    rows = task.rows(pipeline.stream_order(settings, dataset, train, "priority", settings.training.train_seed))
    t0 = time.perf_counter()
    train_trajectory(model, task, [rows], settings.training, seed=settings.training.train_seed)
    epoch_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    evaluate(model, task, range(len(task.node_ids)), mode="teacher_forced",
             batch_size=settings.training.eval_batch_size)
    read_s = time.perf_counter() - t0

    d = design_epochs(settings)
    fig6 = d["fig6_epochs"] * epoch_s + d["fig6_reads"] * read_s
    fig7 = d["fig7_epochs"] * epoch_s + d["fig7_reads"] * read_s
    minimum = (d["fig6_minimum_epochs"] + d["fig7_minimum_epochs"]) * epoch_s
    print(f"profile {args.profile}: {len(train)} training instances, {len(task.node_ids)} device nodes, "
          f"{task.compute_dtype}, set-up (backbone, frozen pass) {setup_s:.0f} s")
    print(f"one training epoch          {epoch_s:8.2f} s")
    print(f"one read-out of every node  {read_s:8.2f} s")
    print(f"Fig. 6 design: {d['fig6_epochs']:.0f} epochs + {d['fig6_reads']:.0f} read-outs = {fig6 / 60:.1f} min")
    print(f"Fig. 7 design: {d['fig7_epochs']:.0f} epochs + {d['fig7_reads']:.0f} read-outs = {fig7 / 60:.1f} min "
          "(greedy decoding and line 14 not counted)")
    print(f"Figs. 6 + 7 together: {(fig6 + fig7) / 60:.1f} min = {(fig6 + fig7) / 60 / args.budget_min:.2f} x "
          f"the {args.budget_min:.0f}-min budget")
    print(f"smallest design the comparisons need (training only): {minimum / 60:.1f} min = "
          f"{minimum / 60 / args.budget_min:.2f} x the budget")


if __name__ == "__main__":
    main()
