"""The Twin Adapter pipeline the training chapters share: backbone, adapters and task from the settings, the
training stream in pooled or random order, the seeds, and what a reader on other hardware should expect.
"""

from __future__ import annotations

import platform

import torch

from ..adapter import TwinAdapterConfig, add_twin_adapters
from ..config import TrainingConfig, select_device
from ..llm import load_backbone
from ..pooling import pool_readings, training_order
from ..topology import DataSet, Instance, generate_dataset
from ..training import TrainingError, TwinTask, prepare_task

__all__ = ["training_instances", "run_seeds", "setup_twin", "retask", "hardware_note", "stream_order",
           "DTYPE_EPOCH_SECONDS"]


def training_instances(dataset: DataSet, config: TrainingConfig) -> list[Instance]:
    """The training split in log order, cut to the first ``config.train_limit`` instances (0 = all)."""
    train = sorted(dataset.split("train"), key=lambda i: i.index)
    if not train:
        raise TrainingError("dataset: the training split is empty; nothing to train on")
    return train[: config.train_limit] if config.train_limit else train


def run_seeds(config: TrainingConfig) -> list[int]:
    """``train_seed, train_seed + 1, ...`` (``n_seeds`` of them)."""
    return list(range(config.train_seed, config.train_seed + config.n_seeds))


def setup_twin(settings, *, dataset: DataSet | None = None, device: str = "auto", id_style: str | None = None,
               progress: bool = False, step_cache=None):
    """``(model, tokenizer, dataset, task)``: backbone + Twin Adapters + data set (default: generated from
    ``settings.topology``) + prepared task, from :class:`gentwin.config.Settings`.

    ``id_style`` defaults to ``settings.training.id_style`` (opaque ids are drawn with ``train_seed``).
    Sets torch's CPU threads to ``torch_threads`` (process-wide: the same seed then gives the same numbers on
    one machine); ``step_cache`` keeps the frozen pass.
    """
    cfg = settings.training
    torch.set_num_threads(cfg.torch_threads)
    dataset = generate_dataset(settings.topology) if dataset is None else dataset
    model, tok = load_backbone(cfg.backbone, device=select_device(device))
    add_twin_adapters(model, TwinAdapterConfig.from_settings(settings, seed=cfg.train_seed))
    task = prepare_task(model, tok, dataset, max_length=cfg.max_length, restrict_vocab=cfg.restrict_vocab,
                        compute_dtype=cfg.compute_dtype, batch_size=cfg.eval_batch_size,
                        id_style=cfg.id_style if id_style is None else id_style, id_seed=cfg.train_seed,
                        progress=progress, step_cache=step_cache)
    return model, tok, dataset, task


def retask(model, task: TwinTask, settings, id_style: str, *, progress: bool = False, step_cache=None) -> TwinTask:
    """The same data set and model prepared again with another ``id_style`` (its own frozen pass)."""
    if id_style == ("named" if task.names is None else "opaque"):
        return task
    cfg = settings.training
    return prepare_task(model, task.tokenizer, task.dataset, max_length=cfg.max_length,
                        restrict_vocab=cfg.restrict_vocab, compute_dtype=task.compute_dtype,
                        batch_size=cfg.eval_batch_size, id_style=id_style, id_seed=cfg.train_seed,
                        progress=progress, step_cache=step_cache)


#: Measured on the quick Fig. 7 task (24 training instances, batches of 8, 2 threads) on an AVX-512 CPU with
#: avx512_bf16 but no AMX: seconds per training epoch under each compute type.
DTYPE_EPOCH_SECONDS = {"float32": 1.67, "bfloat16": 7.10}


def hardware_note(task: TwinTask, threads: int | None = None) -> str:
    """One sentence for a training page: what ran here and what a reader on other hardware should expect."""
    threads = torch.get_num_threads() if threads is None else threads
    cap = torch.backends.cpu.get_cpu_capability()
    f32, bf16 = DTYPE_EPOCH_SECONDS["float32"], DTYPE_EPOCH_SECONDS["bfloat16"]
    return (f"This page ran in {task.compute_dtype} on {platform.machine()} ({cap}, {threads} torch threads); the "
            "same seeds give identical numbers on a re-run on one machine, but another CPU or a GPU rounds matrix "
            "products differently, so expect per-seed values to differ and means to agree only within their "
            f"intervals; compute_dtype='auto' picks bfloat16 only on CUDA or AMX CPUs, because on an AVX-512 CPU "
            f"without AMX a bfloat16-autocast epoch of the quick task took {bf16:.1f} s against {f32:.1f} s in "
            "float32.")


def stream_order(settings, dataset: DataSet, instances: list[Instance], by: str, seed: int) -> list[Instance]:
    """The training stream: ``instances`` ordered ``by`` priority, weight or at random (``seed``), with the
    pooling readings of ``settings.pooling``."""
    return training_order(dataset, instances, by=by, seed=seed, **pool_readings(settings.pooling))

