"""Fig. 7: accuracy and eq. (9) L1 per epoch while the Twin Adapter trains, and the scores of greedy decoding after.

:func:`runs` trains every seed for ``epochs`` epochs (:func:`gentwin.training.train_twin`,
teacher-forced scores per epoch), then decodes every node greedily; with
``qa_feedback`` it adds Algorithm 1 line 14 (:func:`qa_feedback`: a pass on
question/answer prompts made from the model's own triples).
:func:`final_table`, :func:`headline` and :func:`triples_by_kind` are the
chapter's tables and glued values.
"""

from __future__ import annotations

import time
from typing import Any, Iterable

import torch

from ..adapter import adapter_modules
from ..config import TrainingConfig
from ..frozen import frozen_states
from ..progress import progress as progress_bar
from ..reference import by_key
from ..stats import summarise
from ..topology import Relation
from ..training import (TrainingError, TwinTask, eval_rows, evaluate, extract_graph, make_optimizer, pass_rows,
                        predict_triples, reset_adapters, run_seeds, split_layer, stream_order, train_pass, train_twin,
                        training_instances)
from ..verbalise import IGNORE, encode_pairs, qa_pairs

__all__ = ["PAPER_KEYS", "qa_feedback", "runs", "final_table", "headline", "triples_by_kind"]


def qa_feedback(
    model,
    task: TwinTask,
    generated: Iterable[Relation],
    config: TrainingConfig,
    *,
    seed: int,
    epochs: int | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """Algorithm 1 line 14: fine-tune on question/answer prompts made from the model's own triples.

    The generated triples (e.g. :func:`~gentwin.training.extract_graph`) become
    :func:`~gentwin.verbalise.qa_pairs`; their frozen part is computed once, then the adapters
    train ``epochs`` (default ``config.qa_epochs``) passes over them with the
    task's optimiser settings.  Pairs with answer tokens outside the task's
    output vocabulary are skipped.  Returns ``pairs``, ``skipped`` and the
    mean loss of the last pass.
    """
    pairs = qa_pairs(generated)
    if not pairs:
        raise TrainingError("generated: no triple to turn into question/answer prompts")
    n_epochs = config.qa_epochs if epochs is None else int(epochs)
    enc = encode_pairs(task.tokenizer, pairs, max_length=task.max_length)
    keep = list(range(len(pairs)))
    if task.vocab is not None:
        lab = enc.labels
        ok = ((lab == IGNORE) | (task.vocab.lookup[lab.clamp(min=0)] >= 0)).all(1)
        keep = [k for k in range(len(pairs)) if bool(ok[k])]
    if not keep:
        raise TrainingError("generated: every answer uses tokens outside the output vocabulary")
    sub = encode_pairs(task.tokenizer, [pairs[k] for k in keep], max_length=task.max_length)
    start = split_layer(model)
    inside = task.frozen is None or task.frozen.inside
    qa_task = TwinTask(
        tokenizer=task.tokenizer, dataset=task.dataset, node_ids=[p for p, _ in pairs], row_of={},
        gold=[frozenset()] * len(keep), encoded=sub, vocab=task.vocab,
        frozen=frozen_states(model, sub, start, adapter=adapter_modules(model)[start] if inside else None,
                             batch_size=config.eval_batch_size, compute_dtype=task.compute_dtype, progress=progress),
        max_length=task.max_length, compute_dtype=task.compute_dtype,
    )
    rows = torch.arange(len(keep))
    loss = float("nan")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        optimizer = make_optimizer(model.parameters(), config.optimizer, config.learning_rate)
        gen = torch.Generator().manual_seed(int(seed))
        for _ in range(n_epochs):
            loss = train_pass(model, qa_task, pass_rows(rows, config.shuffle_passes, gen), optimizer,
                              config.batch_size, "cached")
    return {"pairs": float(len(pairs)), "skipped": float(len(pairs) - len(keep)), "loss": loss}


def runs(model, task: TwinTask, settings, *, progress: bool = False):
    """Fig. 7: ``epochs`` epochs per seed, per-epoch metrics on training and validation, final greedy decoding.

    Every seed restarts the adapters (:func:`~gentwin.training.reset_adapters`) and orders the
    training instances by ``settings.pooling.order`` with that seed.
    Returns ``(history, final)``: ``history`` is :func:`~gentwin.training.train_twin`'s table for
    all seeds; ``final`` has one row per seed and split with the scores of
    greedy decoding after the last epoch (and after the question/answer pass
    when ``qa_feedback`` is on, as ``stage = "qa"``).
    """
    import pandas as pd

    cfg = settings.training
    train = training_instances(task.dataset, cfg)
    histories, finals = [], []
    for seed in progress_bar(run_seeds(cfg), desc="seeds", disable=not progress, leave=False):
        reset_adapters(model, seed)
        order = stream_order(settings, task.dataset, train, settings.pooling.order, seed)
        t0 = time.perf_counter()
        hist = train_twin(model, task, order, cfg, seed=seed, progress=progress)
        hist["wall_s"] = time.perf_counter() - t0
        histories.append(hist)
        rows = task.rows(order)
        stages = [("trained", None)]
        if cfg.qa_feedback:
            stages.append(("qa", lambda: qa_feedback(model, task, extract_graph(model, task), cfg, seed=seed)))
        for stage, action in stages:
            if action is not None:
                action()
            for split in ("train", "validation"):
                sc = evaluate(model, task, eval_rows(task, rows, split), mode="generate", l1_index=cfg.l1_index,
                              batch_size=cfg.eval_batch_size)
                finals.append(dict(seed=seed, split=split, stage=stage, **sc))
    return pd.concat(histories, ignore_index=True), pd.DataFrame(finals)


#: The paper's reference values (gentwin.reference keys) beside our (split, metric).
PAPER_KEYS = {("train", "accuracy"): "fig7_train_accuracy", ("validation", "accuracy"): "fig7_val_accuracy",
              ("validation", "l1"): "fig7_val_l1"}


def final_table(final, confidence: float, qa: bool):
    """Mean and confidence interval over seeds of greedy decoding's accuracy, precision and L1, per split.

    ``final`` is :func:`runs`' second table; ``qa`` picks the stage after the
    question/answer pass.  The ``paper (reference)`` column holds the paper's
    value where it reports one (:data:`PAPER_KEYS`, from :mod:`gentwin.reference`).
    """
    import pandas as pd

    res = final[final.stage == ("qa" if qa else "trained")]
    rows = []
    for split in ("train", "validation"):
        sub = res[res.split == split]
        for metric in ("accuracy", "precision", "l1"):
            m = summarise(sub.assign(all=0), "all", metric, confidence).iloc[0]
            rows.append({"split": split, "metric": metric, "mean": m["mean"], "low": m["low"], "high": m["high"],
                         "seeds": int(m["n"])})
    table = pd.DataFrame(rows)
    table["paper (reference)"] = [by_key(PAPER_KEYS[key]).paper_text if key in PAPER_KEYS else ""
                                  for key in zip(table.split, table.metric)]
    return table


def headline(table, history, epochs: int) -> dict[str, Any]:
    """The chapter's glued values: epochs, greedy train/validation accuracy and validation L1 (mean, low,
    high), and the teacher-forced validation accuracy at the last epoch."""
    out: dict[str, Any] = {"fig7_epochs": int(epochs)}
    for key, split, metric in (("fig7_train_accuracy", "train", "accuracy"),
                               ("fig7_val_accuracy", "validation", "accuracy"),
                               ("fig7_val_l1", "validation", "l1")):
        r = table[(table.split == split) & (table.metric == metric)].iloc[0]
        out.update({key: float(r["mean"]), key + "_low": float(r["low"]), key + "_high": float(r["high"])})
    scored = history[history.split.isin(["train", "validation"])]
    out["fig7_val_tf_accuracy"] = float(scored[scored.epoch == epochs].groupby("split")["accuracy"].mean()["validation"])
    return out


def triples_by_kind(model, task: TwinTask):
    """Greedy decoding of every validation node: per kind of true triple (e.g. ``sensor -CONNECTED_TO->
    gateway``) how many there are and the fraction produced; and the produced triples per node.

    Returns ``(table, produced)`` with ``produced[k]`` the triples of ``task.split_rows("validation")[k]``.
    """
    import pandas as pd

    nodes = task.dataset.topology.nodes
    val_rows = task.split_rows("validation")
    produced, _ = predict_triples(model, task, val_rows, mode="generate")
    records = [{"triple": f"{nodes[task.node_ids[r]].kind} -{rel.type}-> {nodes[rel.tail].kind}",
                "produced": rel in got}
               for r, got in zip(val_rows, produced) for rel in task.gold[r]]
    table = (pd.DataFrame(records).groupby("triple")["produced"].agg(true="size", produced="sum")
             .assign(fraction=lambda d: (d["produced"] / d["true"]).round(3)))
    return table, produced
