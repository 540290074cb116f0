"""Tests of gentwin.experiments.fig7: the question/answer pass, the runner and the chapter's tables."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from gentwin import training as T
from gentwin.adapter import adapter_modules
from gentwin.config import resolve
from gentwin.experiments import fig7
from gentwin.reference import by_key
from gentwin.topology import Relation
from gentwin.verbalise import qa_pairs

pytestmark = pytest.mark.usefixtures("one_thread")


def test_qa_pairs_and_the_feedback_pass(tiny_adapted, toy_ds, toy_config):
    model, tok = tiny_adapted
    rels = [Relation("AQ-S001", "CONNECTED_TO", "AQ-GW01"), Relation("AQ-GW01", "CONNECTED_TO", "AQ-GW02"),
            Relation("AQ-GW01", "SERVES_IN", "AQ")]
    pairs = qa_pairs(rels)
    assert pairs == [
        ("Q: What is AQ-GW01 connected to? A:", "AQ-GW02"),
        ("Q: Which service does AQ-GW01 serve in? A:", "AQ"),
        ("Q: What is AQ-S001 connected to? A:", "AQ-GW01"),
    ]
    task = T.prepare_task(model, tok, toy_ds, max_length=256)
    top = max(adapter_modules(model))
    before = {k: v.clone() for k, v in adapter_modules(model)[top].state_dict().items()}
    out = fig7.qa_feedback(model, task, rels, toy_config(), seed=0, epochs=2)
    assert out["pairs"] == 3 and out["skipped"] == 0
    after = adapter_modules(model)[top].state_dict()
    assert not torch.equal(before["up.weight"], after["up.weight"])
    with pytest.raises(T.TrainingError, match="generated: no triple"):
        fig7.qa_feedback(model, task, [], toy_config(), seed=0)


def test_arm_config_reads_the_optimiser_and_turns_in_pass_shuffling_off():
    cfg = resolve("quick", learning_rate=0.08, adamw_learning_rate=0.002).training
    sgd, adamw = fig7.arm_config(cfg, "sgd/priority"), fig7.arm_config(cfg, "adamw/random")
    assert (sgd.optimizer, sgd.learning_rate, sgd.shuffle_passes) == ("sgd", 0.08, False)
    assert (adamw.optimizer, adamw.learning_rate) == ("adamw", 0.002)
    with pytest.raises(T.TrainingError, match="arm = 'adam'"):
        fig7.arm_config(cfg, "adam")


def test_backbone_table_counts_what_is_trained_and_cached(tiny_adapted, toy_ds, toy_config):
    model, tok = tiny_adapted  # the tiny LLaMA has 3 decoder layers; adapters on the top two
    task = T.prepare_task(model, tok, toy_ds, max_length=256)
    table = fig7.backbone_table(model, task, toy_config(), 2.6)["value"]
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert table["trainable parameters (adapters)"] == f"{trainable:,}"
    assert table["adapted layers"] == "1..2" and table["decoder layers"] == 3
    assert table["device nodes (sequences)"] == 4 + 2  # one sequence per sensor and gateway
    assert table["training instances"] == len(toy_ds.split("train")) == 3  # half of 6 instances
    assert table["output vocabulary"] == f"{len(task.vocab)} of {model.config.vocab_size:,} token ids"
    assert table["set-up time (load + frozen pass)"] == "3 s"


def test_generated_examples_show_the_true_target_beside_what_was_produced(tiny_adapted, toy_ds):
    model, tok = tiny_adapted
    task = T.prepare_task(model, tok, toy_ds, max_length=256)
    val = task.split_rows("validation")
    perfect = fig7.generated_examples(task, [task.gold[r] for r in val])
    assert len(perfect) == len(val) == 2
    # the gold triples, written as the targets write them
    assert perfect["generated (last run)"].tolist() == perfect["true"].tolist()
    assert perfect["prompt"].tolist() == [task.encoded.prompts[r] for r in val]
    one = fig7.generated_examples(task, [set(), {Relation("AQ-S001", "SERVES_IN", "AQ")}], n=1)
    assert one["generated (last run)"].tolist() == [""]  # only the first node, which produced nothing


def test_epoch_bands_average_one_arm_over_seeds_per_split_and_epoch():
    rows = [dict(arm=arm, seed=seed, epoch=epoch, split=split, accuracy=acc, accuracy_copyable=acc,
                 accuracy_inferred=0.0, l1=1 - acc, copyable_share=0.5 if split == "train" else 0.25)
            for arm in ("a", "b") for seed, acc in ((0, 0.2), (1, 0.6)) for epoch in (0, 1)
            for split in ("train", "validation", "test")]
    scored, bands = fig7.epoch_bands(pd.DataFrame(rows), "a", 0.95)
    assert set(scored.arm) == {"a"} and set(scored.split) == {"train", "validation"} and len(scored) == 8
    assert len(bands) == 2 * 4 * 2  # splits x metrics x epochs
    acc = bands[(bands.metric == "accuracy") & (bands.split == "validation") & (bands.epoch == 1)].iloc[0]
    assert acc["mean"] == pytest.approx(0.4) and acc["n"] == 2 and acc["low"] < 0.4 < acc["high"]
    assert bands[bands.metric == "l1"]["mean"].tolist() == pytest.approx([0.6] * 4)
    assert bands.groupby("split").copy_ceiling.first().to_dict() == {"train": 0.5, "validation": 0.25}


def test_runner_tables_and_headline(tiny_adapted, toy_ds):
    model, tok = tiny_adapted
    task = T.prepare_task(model, tok, toy_ds, max_length=256)
    settings = resolve("quick", epochs=2, n_seeds=2, batch_size=4, train_limit=0, final_eval_mode="generate")
    history, final = fig7.runs(model, task, settings, arms=("sgd/priority", "adamw/random"))
    assert sorted(set(history.seed)) == [0, 1] == sorted(set(final.seed))
    assert history.arm.unique().tolist() == ["sgd/priority", "adamw/random"]
    assert set(history[history.split == "train"].epoch) == {0, 1, 2}
    assert set(final.stage) == {"trained", "qa"} and set(final.split) == {"train", "validation"}
    assert len(final) == 2 * 2 * 2 * 2  # arms x seeds x stages x splits
    # a stage whose line-14 pass had no pair to train on leaves the model as it was
    same = final[final.qa_pairs == 0].groupby(["arm", "seed", "split"])
    for _, sub in same:
        if len(sub) == 2 and set(sub.stage) == {"trained", "qa"}:
            assert sub.accuracy.nunique() == 1
    # the split accuracies add up to the overall one, weighted by the copyable share
    v = final.dropna(subset=["accuracy_copyable", "accuracy_inferred"])
    assert (v.accuracy - (v.copyable_share * v.accuracy_copyable + (1 - v.copyable_share) * v.accuracy_inferred)
            ).abs().max() < 1e-9
    arms = fig7.arm_table(final, 0.95)
    assert len(arms) == 2 * 2 * 2 and set(arms["line 14 (qa)"]) == {"on", "off"}
    diff = fig7.paired_difference(final, 0.95, arm="sgd/priority", baseline="adamw/random")
    assert diff["n"] == 2
    table = fig7.final_table(final, 0.95, qa=False)
    assert table[["split", "metric"]].values.tolist() == [[s, m] for s in ("train", "validation")
                                                          for m in ("accuracy", "precision", "l1")]
    assert table["seeds"].tolist() == [2] * 6
    refs = table.set_index(["split", "metric"])["paper (reference)"]
    assert refs[("train", "accuracy")] == by_key("fig7_train_accuracy").paper_text and refs[("train", "l1")] == ""
    mean_acc = final[(final.split == "validation") & (final.stage == "trained")
                     & (final.arm == "sgd/priority")]["accuracy"].mean()
    out = fig7.headline(table, history, epochs=2)
    assert out["fig7_epochs"] == 2 and out["fig7_val_accuracy"] == pytest.approx(mean_acc)
    assert out["fig7_val_accuracy_low"] <= out["fig7_val_accuracy"] <= out["fig7_val_accuracy_high"]
    assert out["fig7_val_accuracy_n"] == 2
    by_kind, produced = fig7.triples_by_kind(model, task)
    val = task.split_rows("validation")
    assert len(produced) == len(val) and by_kind["true"].sum() == sum(len(task.gold[r]) for r in val)
    assert ((0 <= by_kind["fraction"]) & (by_kind["fraction"] <= 1)).all()


def test_headline_reads_the_last_epochs_teacher_forced_validation_accuracy():
    table = pd.DataFrame([{"split": s, "metric": m, "mean": 0.5, "low": 0.4, "high": 0.6, "seeds": 2}
                          for s in ("train", "validation") for m in ("accuracy", "precision", "l1")])
    history = pd.DataFrame({"split": ["validation", "validation", "train", "none"], "epoch": [3, 3, 3, 3],
                            "accuracy": [0.2, 0.4, 1.0, 0.0]})
    assert fig7.headline(table, history, epochs=3)["fig7_val_tf_accuracy"] == pytest.approx(0.3)


def test_small_tables_by_hand():
    """Formerly doctests of gentwin.experiments.fig7."""
    h = pd.DataFrame({"arm": "a", "seed": 0, "epoch": [0, 1, 1, 2], "split": ["train", "train", "validation",
                      "train"], "seconds": [9.0, 2.0, 2.0, 3.0]})
    assert fig7.training_note(h, resolve("quick", n_seeds=1, epochs=2, fig7_arms=("sgd/priority",)).training,
                              61.4) == "1 arms x 1 seeds x 2 epochs in 61 s (2.5 s per training epoch, evaluation excluded)."
    f = pd.DataFrame({"arm": ["a"] * 3 + ["b"] * 3, "seed": [0, 1, 2] * 2, "split": "validation",
                      "stage": "trained", "accuracy": [0.5, 0.6, 0.7, 0.4, 0.6, 0.5]})
    d = fig7.paired_difference(f, 0.95, arm="a", baseline="b")
    assert (round(d["mean"], 3), d["n"]) == (0.1, 3)  # differences 0.1, 0.0, 0.2
    f = pd.DataFrame({"arm": ["a", "a", "a", "b"], "split": ["validation", "validation", "train", "validation"],
                      "stage": ["trained", "qa", "trained", "trained"], "copyable_share": [0.5, 0.5, 0.9, 0.1],
                      "accuracy_inferred": [0.25, 0.75, 1.0, 0.0]})
    g = fig7.page_glues(f, "a", "generate", 90.0)
    assert (g["fig7_final_mode"], g["fig7_wall_min"], g["fig7_val_ceiling"], g["fig7_val_accuracy_inferred"]) == (
        "greedy decoding from the prompt alone", 1.5, 0.5, 0.25)


def test_comparisons_pair_by_seed_and_compare_line_14_within_a_run():
    rows = []
    for arm, accs in {"sgd/priority": (0.6, 0.7), "sgd/random": (0.5, 0.5), "adamw/priority": (0.9, 0.8)}.items():
        for seed, acc in enumerate(accs):
            rows.append(dict(arm=arm, seed=seed, split="validation", stage="trained", accuracy=acc))
            rows.append(dict(arm=arm, seed=seed, split="validation", stage="qa", accuracy=acc + 0.05 * (seed + 1)))
    out = fig7.comparisons(pd.DataFrame(rows), 0.95, ("sgd/priority", "sgd/random", "adamw/priority"))
    got = out.set_index("comparison")["difference in validation accuracy"]
    assert got["pooling (priority - random)"] == pytest.approx(0.15)  # 0.1 and 0.2
    assert got["optimiser (AdamW - SGD)"] == pytest.approx(0.2)  # 0.3 and 0.1
    assert got["line 14 (on - off)"] == pytest.approx(0.075)  # 0.05 and 0.10
    assert out["seeds"].tolist() == [2, 2, 2]
