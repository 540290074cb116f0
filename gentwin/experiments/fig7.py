"""Fig. 7: accuracy and eq. (9) L1 per epoch while the Twin Adapter trains, and the scores of greedy decoding after."""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Iterable, Sequence

import pandas as pd
import torch

from ..config import TrainingConfig
from ..llm import describe_backbone
from ..metrics import bootstrap_ci, min_detectable_effect
from ..progress import progress as progress_bar
from ..reference import by_key
from ..stats import summarise
from ..topology import Relation
from ..training import (TrainingError, TwinTask, cached_frozen_states, eval_rows, evaluate, extract_graph,
                        predict_triples, reset_adapters, train_trajectory, train_twin)
from ..verbalise import IGNORE, encode_pairs, facts_text, qa_pairs, rename
from .pipeline import run_seeds, stream_order, training_instances

__all__ = ["PAPER_KEYS", "FINAL_MODE_TEXT", "EPOCH_METRICS", "qa_feedback", "arm_config", "backbone_table", "runs",
           "training_note", "epoch_bands", "arm_table", "paired_difference", "comparisons", "final_table",
           "headline", "page_glues", "triples_by_kind", "generated_examples"]

#: How the chapter names each ``final_eval_mode`` in its text.
FINAL_MODE_TEXT = {"generate": "greedy decoding from the prompt alone", "teacher_forced": "the teacher-forced read-out"}
#: The per-epoch curves of Fig. 7 (columns of :func:`~gentwin.training.train_twin`'s table).
EPOCH_METRICS = ("accuracy", "accuracy_copyable", "accuracy_inferred", "l1")
#: The paper's reference values (gentwin.reference keys) beside our (split, metric).
PAPER_KEYS = {("train", "accuracy"): "fig7_train_accuracy", ("validation", "accuracy"): "fig7_val_accuracy",
              ("validation", "l1"): "fig7_val_l1"}


def qa_feedback(model, task: TwinTask, generated: Iterable[Relation], config: TrainingConfig, *, seed: int,
                epochs: int | None = None, progress: bool = False, step_cache=None) -> dict[str, float]:
    """Algorithm 1 line 14: fine-tune on question/answer prompts made from the model's own triples.

    ``epochs`` (default ``qa_epochs``) passes at a constant rate over :func:`~gentwin.verbalise.qa_pairs` of
    ``generated`` (skipping answers outside the output vocabulary); returns ``pairs``, ``skipped`` and the loss.
    """
    pairs = qa_pairs(rename(generated, task.names))  # spelled as the task's prompts spell ids
    if not pairs:
        raise TrainingError("generated: no triple to turn into question/answer prompts")
    n_epochs = config.qa_epochs if epochs is None else int(epochs)
    keep = list(range(len(pairs)))
    if task.vocab is not None:
        lab = encode_pairs(task.tokenizer, pairs, max_length=task.max_length).labels
        ok = ((lab == IGNORE) | (task.vocab.lookup[lab.clamp(min=0)] >= 0)).all(1)
        keep = [k for k in keep if bool(ok[k])]
    if not keep:
        raise TrainingError("generated: every answer uses tokens outside the output vocabulary")
    sub = encode_pairs(task.tokenizer, [pairs[k] for k in keep], max_length=task.max_length)
    qa_task = TwinTask(
        tokenizer=task.tokenizer, dataset=task.dataset, node_ids=[p for p, _ in pairs], row_of={},
        gold=[frozenset()] * len(keep), encoded=sub, vocab=task.vocab,
        frozen=cached_frozen_states(model, sub, inside=task.frozen is None or task.frozen.inside,
                                    batch_size=config.eval_batch_size, compute_dtype=task.compute_dtype,
                                    progress=progress, step_cache=step_cache),
        max_length=task.max_length, compute_dtype=task.compute_dtype,
    )
    trajectory = train_trajectory(model, qa_task, [torch.arange(len(keep))] * n_epochs,
                                  dataclasses.replace(config, discount_factor=1.0), seed=seed, desc="line 14",
                                  step_cache=step_cache)
    return {"pairs": float(len(pairs)), "skipped": float(len(pairs) - len(keep)), "loss": trajectory[-1]["train_loss"]}


def arm_config(config: TrainingConfig, arm: str) -> TrainingConfig:
    """The settings of one Fig. 7 arm ``"optimiser/order"``: SGD at ``learning_rate`` (decayed per epoch) or
    AdamW at ``adamw_learning_rate``, in-pass shuffling off (the order the pools give is the order of the steps).
    """
    optimiser, _, order = arm.partition("/")
    if optimiser not in ("sgd", "adamw") or not order:
        raise TrainingError(f"arm = {arm!r}: must be 'sgd/<order>' or 'adamw/<order>'")
    rate = config.learning_rate if optimiser == "sgd" else config.adamw_learning_rate
    return dataclasses.replace(config, optimizer=optimiser, learning_rate=rate, shuffle_passes=False)


def backbone_table(model, task: TwinTask, config: TrainingConfig, setup_s: float):
    """The backbone and what is trained and cached, one row per item (column ``value``); ``setup_s`` is the
    seconds the load and the frozen pass took."""
    info = describe_backbone(model)
    return pd.Series({
        "backbone": info["name"], "architecture": info["architecture"], "decoder layers": info["layers"],
        "device": info["device"], "compute": f"{task.compute_dtype}, {config.torch_threads} threads",
        "frozen parameters": f"{info['frozen']:,}", "trainable parameters (adapters)": f"{info['trainable']:,}",
        "adapted layers": f"{task.start_layer}..{info['layers'] - 1}",
        "output vocabulary": f"{len(task.vocab)} of {info['vocab_size']:,} token ids" if task.vocab is not None
        else "all token ids",
        "device nodes (sequences)": len(task.node_ids),
        "training instances": len(training_instances(task.dataset, config)),
        "set-up time (load + frozen pass)": f"{setup_s:.0f} s",
    }, name="value").to_frame()


def runs(model, task: TwinTask, settings, *, arms: Sequence[str] | None = None, progress: bool = False,
         step_cache=None):
    """Fig. 7: every arm (default ``fig7_arms``) x seed: ``epochs`` epochs, then greedy decoding, then Algorithm 1
    line 14 and greedy decoding again.

    Returns ``(history, final)``: :func:`~gentwin.training.train_twin`'s tables with column ``arm``, and one row
    per arm, seed, split and ``stage`` (``"trained"``, or ``"qa"`` after line 14) with ``final_eval_mode``'s scores.
    """
    base = settings.training
    train = training_instances(task.dataset, base)
    histories, finals = [], []
    plan = [(arm, seed) for arm in (base.fig7_arms if arms is None else arms) for seed in run_seeds(base)]
    for arm, seed in progress_bar(plan, desc="arm x seed", disable=not progress, leave=False):
        cfg = arm_config(base, arm)
        reset_adapters(model, seed)
        order = stream_order(settings, task.dataset, train, arm.partition("/")[2], seed)
        t0 = time.perf_counter()
        hist = train_twin(model, task, order, cfg, seed=seed, progress=progress, step_cache=step_cache)
        hist["wall_s"] = time.perf_counter() - t0
        hist.insert(0, "arm", arm)
        histories.append(hist)
        rows = task.rows(order)
        for stage in ("trained", "qa"):
            qa_pairs_used = 0.0
            if stage == "qa":
                generated = extract_graph(model, task, mode=cfg.final_eval_mode)
                if generated:  # a model that produced nothing gets no line-14 pass and stays as it is
                    qa_pairs_used = qa_feedback(model, task, generated, cfg, seed=seed,
                                                step_cache=step_cache)["pairs"]
            for split in ("train", "validation"):
                sc = evaluate(model, task, eval_rows(task, rows, split), mode=cfg.final_eval_mode,
                              l1_index=cfg.l1_index, batch_size=cfg.eval_batch_size)
                finals.append(dict(arm=arm, seed=seed, split=split, stage=stage, qa_pairs=qa_pairs_used, **sc))
    return pd.concat(histories, ignore_index=True), pd.DataFrame(finals)


def training_note(history, config: TrainingConfig, seconds: float) -> str:
    """One sentence: arms x seeds x epochs, the ``seconds`` they took, and the mean seconds of one training epoch
    (epoch 0 trains nothing)."""
    per_epoch = history.drop_duplicates(["arm", "seed", "epoch"]).query("epoch > 0")["seconds"]
    return (f"{len(config.fig7_arms)} arms x {config.n_seeds} seeds x {config.epochs} epochs in {seconds:.0f} s "
            f"({per_epoch.mean():.1f} s per training epoch, evaluation excluded).")


def epoch_bands(history, arm: str, confidence: float):
    """Fig. 7's curves for one arm: ``(scored, bands)``, the train and validation rows of ``arm`` and, per split,
    metric (:data:`EPOCH_METRICS`) and epoch, the mean over seeds with its t-interval and the split's
    ``copy_ceiling`` (mean copyable share)."""
    scored = history[(history.arm == arm) & history.split.isin(["train", "validation"])]
    bands = pd.concat([summarise(scored[scored.split == split], "epoch", metric, confidence)
                       .assign(split=split, metric=metric)
                       for split in ("train", "validation") for metric in EPOCH_METRICS], ignore_index=True)
    bands["copy_ceiling"] = bands.split.map(scored.groupby("split").copyable_share.mean())
    return scored, bands


def _boot(sub, metric: str, confidence: float) -> tuple[float, float, float, int]:
    """Mean, percentile-bootstrap interval (resampled means: inside [0, 1]) and seeds of one metric."""
    return (*bootstrap_ci(sub[metric], confidence), int(sub[metric].notna().sum()))


def arm_table(final, confidence: float):
    """Every arm and stage side by side: mean greedy accuracy on train and validation, overall, copyable and
    inferred, with bootstrap intervals, the copy ceiling and the seeds."""
    rows = []
    for (arm, stage, split), sub in final.groupby(["arm", "stage", "split"], sort=False):
        row = {"arm": arm, "line 14 (qa)": "on" if stage == "qa" else "off", "split": split}
        for metric in ("accuracy", "accuracy_copyable", "accuracy_inferred"):
            m, lo, hi, n = _boot(sub, metric, confidence)
            row.update({metric: m, metric + " CI": f"[{lo:.3f}, {hi:.3f}]"})
        rows.append({**row, "copy ceiling": float(sub["copyable_share"].mean()), "seeds": n})
    return pd.DataFrame(rows)


def paired_difference(final, confidence: float, *, arm: str, baseline: str, split: str = "validation",
                      stage: str = "trained", baseline_stage: str | None = None,
                      metric: str = "accuracy") -> dict[str, float]:
    """Per-seed difference ``arm - baseline`` of a greedy metric: mean, bootstrap interval, seeds and minimum
    detectable effect; ``baseline_stage`` (default ``stage``) compares an arm with itself across line 14."""
    sel = final[final.split == split]
    a = sel[(sel.arm == arm) & (sel.stage == stage)].set_index("seed")[metric]
    b = sel[(sel.arm == baseline) & (sel.stage == (baseline_stage or stage))].set_index("seed")[metric]
    diff = (a - b).dropna()
    if diff.empty:
        raise TrainingError(f"arm = {arm!r}, baseline = {baseline!r}: no seed has both")
    m, lo, hi = bootstrap_ci(diff.to_numpy(), confidence)
    return {"mean": m, "low": lo, "high": hi, "n": int(diff.size), "mde": min_detectable_effect(diff.to_numpy())}


def comparisons(final, confidence: float, arms: Sequence[str], qa: bool = False):
    """The chapter's paired comparisons of validation accuracy: pooling (``<opt>/priority`` - ``<opt>/random``),
    the optimiser (``adamw/<order>`` - ``sgd/<order>``), both read before line 14 unless ``qa``, and line 14
    (the headline arm after it - before it)."""
    stage = "qa" if qa else "trained"
    plan = []
    for a in arms:
        opt, _, order = a.partition("/")
        if order == "priority" and f"{opt}/random" in arms:
            plan.append(("pooling (priority - random)", a, f"{opt}/random", stage, stage))
        if opt == "adamw" and f"sgd/{order}" in arms:
            plan.append(("optimiser (AdamW - SGD)", a, f"sgd/{order}", stage, stage))
    plan.append(("line 14 (on - off)", arms[0], arms[0], "qa", "trained"))
    rows = []
    for what, a, b, st, bst in plan:
        d = paired_difference(final, confidence, arm=a, baseline=b, stage=st, baseline_stage=bst)
        rows.append({"comparison": what, "arm": a, "baseline": b, "difference in validation accuracy": d["mean"],
                     "low": d["low"], "high": d["high"], "seeds": d["n"], "MDE": d["mde"]})
    return pd.DataFrame(rows)


def final_table(final, confidence: float, qa: bool, arm: str | None = None):
    """Per split: mean and bootstrap interval over seeds of greedy accuracy, precision and L1 for one arm
    (default: the first), after line 14 when ``qa``, with the paper's value where it reports one
    (:data:`PAPER_KEYS`)."""
    if "arm" in final:
        final = final[final.arm == (final.arm.iloc[0] if arm is None else arm)]
    res = final[final.stage == ("qa" if qa else "trained")]
    table = pd.DataFrame([dict(zip(("split", "metric", "mean", "low", "high", "seeds"),
                                   (split, metric, *_boot(res[res.split == split], metric, confidence))))
                          for split in ("train", "validation") for metric in ("accuracy", "precision", "l1")])
    table["paper (reference)"] = [by_key(PAPER_KEYS[key]).paper_text if key in PAPER_KEYS else ""
                                  for key in zip(table.split, table.metric)]
    return table


def headline(table, history, epochs: int) -> dict[str, Any]:
    """The chapter's glued values: epochs, greedy train/validation accuracy and validation L1 (mean, low, high,
    seeds), and the teacher-forced validation accuracy at the last epoch."""
    out: dict[str, Any] = {"fig7_epochs": int(epochs)}
    for key, (split, metric) in zip(PAPER_KEYS.values(), PAPER_KEYS):
        r = table[(table.split == split) & (table.metric == metric)].iloc[0]
        out.update({key: float(r["mean"]), key + "_low": float(r["low"]), key + "_high": float(r["high"]),
                    key + "_n": int(r["seeds"])})
    if "arm" in history:
        history = history[history.arm == history.arm.iloc[0]]
    scored = history[history.split.isin(["train", "validation"])]
    last = scored[scored.epoch == epochs]
    out["fig7_val_tf_accuracy"] = float(last.groupby("split")["accuracy"].mean()["validation"])
    return out


def page_glues(final, arm: str, final_eval_mode: str, seconds: float) -> dict[str, Any]:
    """The chapter's other glued values: the claims' margin, how the final scores were read, the page's minutes,
    and for ``arm`` on validation the copy ceiling and the accuracy on inferred relations before line 14."""
    val = final[(final.arm == arm) & (final.split == "validation")]
    return {"fig7_margin": f"{by_key('fig7_val_accuracy').margin:g}",
            "fig7_final_mode": FINAL_MODE_TEXT[final_eval_mode],
            "fig7_wall_min": float(seconds / 60), "fig7_val_ceiling": float(val.copyable_share.mean()),
            "fig7_val_accuracy_inferred": float(val[val.stage == "trained"].accuracy_inferred.mean())}


def triples_by_kind(model, task: TwinTask):
    """Greedy decoding of every validation node: ``(table, produced)``, per kind of true triple (e.g. ``sensor
    -CONNECTED_TO-> gateway``) how many there are and the fraction produced, and the triples of each node."""
    nodes = task.dataset.topology.nodes
    val_rows = task.split_rows("validation")
    produced, _ = predict_triples(model, task, val_rows, mode="generate")
    records = [{"triple": f"{nodes[task.node_ids[r]].kind} -{rel.type}-> {nodes[rel.tail].kind}",
                "produced": rel in got}
               for r, got in zip(val_rows, produced) for rel in task.gold[r]]
    table = (pd.DataFrame(records).groupby("triple")["produced"].agg(true="size", produced="sum")
             .assign(fraction=lambda d: (d["produced"] / d["true"]).round(3)))
    return table, produced


def generated_examples(task: TwinTask, produced: Sequence[Iterable[Relation]], n: int = 4):
    """The first ``n`` validation nodes: prompt, true target and the triples ``produced`` for them (in
    ``task.split_rows("validation")`` order)."""
    val_rows = task.split_rows("validation")
    return pd.DataFrame([{"prompt": task.encoded.prompts[r], "true": task.encoded.targets[r],
                          "generated (last run)": facts_text(got)} for r, got in list(zip(val_rows, produced))[:n]])
