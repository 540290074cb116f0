"""Twin Adapter with a cached frozen part versus a plain PEFT LoRA fine-tune: time per epoch and accuracy.

One run, same data, same backbone, same training order, optimiser and epochs:

* **Twin Adapter pipeline** (gentwin.training): the frozen part below the lowest adapter is computed
  once; every step runs only the adapter(s), the layers above, the final norm and an output head
  restricted to the task's token ids.
* **LoRA baseline** (benchmarks/lora_budget.py): PEFT LoRA on the same top layers with about the
  same number of trainable parameters; every step is a full forward and backward pass of the whole
  model with the full output head (what a plain fine-tune does).

Each pipeline runs in its own child process so that its peak memory (max RSS) is its own.  Printed:
seconds per training epoch (mean over epochs, evaluation excluded), the one-off frozen pass, the ratio,
validation accuracy after the last epoch (teacher-forced and greedy decoding, as defined in
gentwin.training) and peak memory.

    .venv/bin/python benchmarks/adapter_training.py            # SmolLM2, paper-sized data, 10 epochs
    .venv/bin/python benchmarks/adapter_training.py --tiny     # tiny random LLaMA, quick data: a check

Targets on a 2-core CPU: >= 5x faster per epoch at equal or better validation accuracy; peak memory
<= 6 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def _settings(args):
    import gentwin.config as C

    over = dict(compute_dtype=args.compute_dtype)
    if args.batch_size:
        over["batch_size"] = args.batch_size
    if args.tiny:
        return C.resolve("quick", train_limit=0, **over)
    return C.resolve(args.profile, **over)


def _model(args, settings):
    if args.tiny:
        from gentwin.llm import tiny_backbone

        return tiny_backbone(seed=0, hidden_size=64, num_layers=4)
    from gentwin.config import select_device
    from gentwin.llm import load_backbone

    return load_backbone(settings.training.backbone, device=select_device("auto"))


def run_one(args) -> dict:
    """One pipeline in this process; returns its measurements."""
    import torch

    from gentwin import training as T
    from gentwin.experiments import pipeline
    from gentwin.adapter import TwinAdapterConfig, add_twin_adapters
    from gentwin.llm import count_parameters, describe_backbone
    from gentwin.topology import generate_dataset
    from lora_budget import lora_baseline  # beside this script

    settings = _settings(args)
    cfg = settings.training
    dataset = generate_dataset(settings.topology)
    train = pipeline.training_instances(dataset, cfg)
    order = pipeline.stream_order(settings, dataset, train, "priority", args.seed)
    model, tok = _model(args, settings)
    name = describe_backbone(model)["name"]
    adapter_cfg = TwinAdapterConfig.from_settings(settings, seed=args.seed)
    t0 = time.perf_counter()
    if args.only == "twin":
        add_twin_adapters(model, adapter_cfg)
        task = T.prepare_task(model, tok, dataset, max_length=cfg.max_length, restrict_vocab=cfg.restrict_vocab,
                              compute_dtype=cfg.compute_dtype, batch_size=cfg.eval_batch_size)
        path = "cached"
    else:
        from gentwin.adapter import adapter_parameter_count

        target = adapter_parameter_count(adapter_cfg, model.config.hidden_size, model.config.num_hidden_layers)
        model = lora_baseline(model, target, n_top=cfg.adapter_layers, seed=args.seed)
        task = T.prepare_task(model, tok, dataset, max_length=cfg.max_length, restrict_vocab=False, cache=False,
                              compute_dtype=cfg.compute_dtype)
        path = "plain"
    prepare_s = time.perf_counter() - t0
    hist = T.train_twin(model, task, order, cfg, seed=args.seed, epochs=args.epochs, eval_splits=(), path=path)
    epoch_s = hist.drop_duplicates("epoch").query("epoch > 0")["seconds"].tolist()
    val_rows = task.split_rows("validation")
    t1 = time.perf_counter()
    tf = T.evaluate(model, task, val_rows, mode="teacher_forced", path=path, batch_size=16)
    gen = T.evaluate(model, task, val_rows, mode="generate", path=path, batch_size=16)
    eval_s = time.perf_counter() - t1
    return {
        "pipeline": args.only, "backbone": name, "trainable": count_parameters(model)["trainable"],
        "prepare_s": prepare_s, "epoch_s": epoch_s, "mean_epoch_s": sum(epoch_s) / len(epoch_s),
        "val_tf_accuracy": tf["accuracy"], "val_gen_accuracy": gen["accuracy"], "val_gen_precision": gen["precision"],
        "val_gen_l1": gen["l1"], "train_loss_last": float(hist["train_loss"].iloc[-1]), "eval_s": eval_s,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2,
        "threads": torch.get_num_threads(), "instances": len(order), "epochs": args.epochs,
        "compute_dtype": task.compute_dtype, "batch_size": cfg.batch_size,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="tiny random LLaMA and quick-sized data (a fast check)")
    p.add_argument("--profile", default="paper", help="gentwin.config profile for the data and training settings")
    p.add_argument("--epochs", type=int, default=None, help="epochs for both pipelines (default 10; --tiny 3)")
    p.add_argument("--batch-size", type=int, default=None, help="override the profile's batch size")
    p.add_argument("--compute-dtype", default="auto", choices=("auto", "bfloat16", "float32"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", choices=("twin", "lora"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.epochs is None:
        args.epochs = 3 if args.tiny else 10
    if args.only:
        print(json.dumps(run_one(args)))
        return 0
    results = {}
    for which in ("twin", "lora"):
        cmd = [sys.executable, os.path.abspath(__file__), "--only", which, "--epochs", str(args.epochs),
               "--profile", args.profile, "--compute-dtype", args.compute_dtype, "--seed", str(args.seed)]
        if args.tiny:
            cmd.append("--tiny")
        if args.batch_size:
            cmd += ["--batch-size", str(args.batch_size)]
        t = time.perf_counter()
        out = subprocess.run(cmd, check=True, capture_output=True, text=True)
        results[which] = json.loads(out.stdout.strip().splitlines()[-1])
        results[which]["wall_s"] = time.perf_counter() - t
    tw, lo = results["twin"], results["lora"]
    ratio = lo["mean_epoch_s"] / tw["mean_epoch_s"]
    n = args.epochs
    amortised = (lo["prepare_s"] + n * lo["mean_epoch_s"]) / (tw["prepare_s"] + n * tw["mean_epoch_s"])
    print(f"backbone: {tw['backbone']}; {tw['instances']} training instances; {n} epochs; batch {tw['batch_size']}; "
          f"{tw['compute_dtype']} autocast; {tw['threads']} threads")
    print(f"{'':28s}{'Twin Adapter (cached)':>24s}{'LoRA (plain)':>16s}")
    rows = [
        ("trainable parameters", f"{tw['trainable']:,}", f"{lo['trainable']:,}"),
        ("one-off frozen pass (s)", f"{tw['prepare_s']:.1f}", f"{lo['prepare_s']:.1f}"),
        ("seconds per epoch", f"{tw['mean_epoch_s']:.2f}", f"{lo['mean_epoch_s']:.2f}"),
        ("last train loss", f"{tw['train_loss_last']:.3f}", f"{lo['train_loss_last']:.3f}"),
        ("val accuracy (teacher-forced)", f"{tw['val_tf_accuracy']:.3f}", f"{lo['val_tf_accuracy']:.3f}"),
        ("val accuracy (greedy decoding)", f"{tw['val_gen_accuracy']:.3f}", f"{lo['val_gen_accuracy']:.3f}"),
        ("val precision (greedy)", f"{tw['val_gen_precision']:.3f}", f"{lo['val_gen_precision']:.3f}"),
        ("val L1 eq. (9) (greedy)", f"{tw['val_gen_l1']:.3f}", f"{lo['val_gen_l1']:.3f}"),
        ("peak memory (GB, max RSS)", f"{tw['peak_rss_gb']:.2f}", f"{lo['peak_rss_gb']:.2f}"),
        ("process wall time (s)", f"{tw['wall_s']:.0f}", f"{lo['wall_s']:.0f}"),
    ]
    for label, a, b in rows:
        print(f"{label:28s}{a:>24s}{b:>16s}")
    print(f"speed-up per epoch: {ratio:.1f}x (target >= 5x); including the one-off frozen pass over {n} epochs: "
          f"{amortised:.1f}x")
    ok_acc = tw["val_gen_accuracy"] >= lo["val_gen_accuracy"]
    print(f"validation accuracy (greedy) equal or better: {'yes' if ok_acc else 'no'}; "
          f"peak memory <= 6 GB: {'yes' if max(tw['peak_rss_gb'], lo['peak_rss_gb']) <= 6 else 'no'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
