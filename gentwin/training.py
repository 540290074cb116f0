r"""Training the Twin Adapter on the twin-modelling task (Section II.B.2, Algorithm 1 lines 9-14).

:func:`prepare_task` verbalises every device node once (:mod:`gentwin.verbalise`) and runs the frozen part
once (:mod:`gentwin.frozen`) for every epoch, seed and order.  Training minimises the cross-entropy of the
target tokens in the order Priority Pooling gives (:func:`gentwin.pooling.training_order`).  A model's
triples come from a teacher-forced forward pass over the gold sequence (cheap: the per-epoch curves) or
greedy decoding from the prompt alone (the final numbers); :func:`evaluate` scores them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .adapter import adapter_layer_indices, adapter_modules
from .checks import check_int
from .config import TrainingConfig
from .frozen import FrozenStates, frozen_states, full_hidden, top_hidden
from .llm import (causal_lm, compute_autocast, greedy_generate, head_logits, model_device,
                  resolve_compute_dtype)
from .metrics import class_accuracy, triple_scores
from .progress import progress as progress_bar
from .topology import DataSet, Instance, Relation
from .verbalise import (ID_STYLES, IGNORE, Encoded, OutputVocab, encode_pairs, facts_text, node_facts,
                        node_prompt, opaque_names, output_vocabulary, parse_triples, relation_copyable, rename)

__all__ = [
    "TrainingError", "split_layer", "target_loss", "TwinTask", "prepare_task", "cached_frozen_states",
    "reset_adapters", "predict_triples", "decode_triples", "evaluate", "extract_graph", "make_optimizer",
    "train_pass", "pass_rows", "eval_rows", "adapter_state", "load_adapter_state", "train_trajectory", "train_twin",
]


class TrainingError(ValueError):
    """Bad input to the twin-modelling task (the message names the argument and value)."""


def split_layer(model) -> int:
    """Index of the lowest decoder layer with a Twin Adapter: everything below it is frozen and cacheable."""
    indices = adapter_layer_indices(model)
    if not indices:
        raise TrainingError(f"model = {type(model).__name__}: has no Twin Adapters "
                            "(use gentwin.adapter.add_twin_adapters)")
    return min(indices)


def _kept(vocab: OutputVocab | None):
    return None if vocab is None else vocab.ids


def _target_positions(hidden: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Hidden states that predict a label (position t predicts token t+1) and those labels."""
    keep = labels[:, 1:] != IGNORE
    return hidden[:, :-1][keep], labels[:, 1:][keep]


def target_loss(model, hidden: torch.Tensor, labels: torch.Tensor, vocab: OutputVocab | None = None) -> torch.Tensor:
    """Mean cross-entropy over the target tokens only (prompt and padding are ``-100``), over the restricted
    output vocabulary ``vocab`` when given."""
    h, y = _target_positions(hidden, labels.to(hidden.device))
    if y.numel() == 0:
        raise TrainingError("labels: no target token in the batch (all -100)")
    logits = head_logits(model, h, _kept(vocab))
    if vocab is not None:
        y = vocab.restrict(y)
    return F.cross_entropy(logits.float(), y)


@dataclass
class TwinTask:
    """Everything the training loop reuses across epochs, seeds and conditions: one row per device node
    (topology order); ``frozen`` is the frozen part's output (None for the plain path)."""

    tokenizer: Any
    dataset: DataSet
    node_ids: list[str]
    row_of: dict[str, int]
    gold: list[frozenset[Relation]]
    encoded: Encoded
    vocab: OutputVocab | None
    frozen: FrozenStates | None
    max_length: int
    compute_dtype: str = "float32"
    names: dict[str, str] | None = None  #: node id -> the id prompts and targets spell (None: as in the data set)
    copyable: list[frozenset[Relation]] | None = None  #: per row, the gold relations its prompt names

    def parse(self, text: str) -> list[Relation]:
        """The triples of generated ``text``, with the spelled ids mapped back to the data set's ids."""
        back = None if self.names is None else {v: k for k, v in self.names.items()}
        return rename(parse_triples(text), back)

    @property
    def start_layer(self) -> int | None:
        """The lowest adapted layer (where the cached part ends), or None without a cache."""
        return None if self.frozen is None else self.frozen.layer

    def rows(self, instances: Sequence[Instance]) -> torch.Tensor:
        """Row of each instance's node."""
        try:
            return torch.tensor([self.row_of[i.node_id] for i in instances], dtype=torch.long)
        except KeyError as err:
            raise TrainingError(f"instances: node {err.args[0]!r} is not a device node of the task's "
                                "topology") from None

    def split_rows(self, split: str) -> list[int]:
        """Rows of the unique nodes observed in ``split`` (sorted)."""
        return sorted({self.row_of[i.node_id] for i in self.dataset.split(split)})

    @property
    def max_target_tokens(self) -> int:
        """Longest target incl. end-of-sequence (bounds greedy decoding)."""
        return int((self.encoded.lengths - self.encoded.prompt_lengths).max())


def prepare_task(model, tokenizer, dataset: DataSet, *, max_length: int = 128, restrict_vocab: bool = True,
                 cache: bool = True, batch_size: int = 32, inside: bool = True, compute_dtype: str = "float32",
                 id_style: str = "named", id_seed: int = 0, progress: bool = False, step_cache=None) -> TwinTask:
    """Verbalise and tokenise every device node once and run the frozen part once.

    ``model`` carries Twin Adapters (with ``cache=False`` any causal LM, e.g. the LoRA baseline).
    ``restrict_vocab`` keeps only the token ids of the targets plus end-of-sequence.  ``cache`` runs the
    frozen part now (``inside``: into the lowest adapted layer up to its adapter; kept in ``step_cache``).
    ``compute_dtype`` (:func:`gentwin.llm.resolve_compute_dtype`) holds for every forward pass on the task.
    ``id_style="opaque"`` relabels node ids to opaque tokens (:func:`~gentwin.verbalise.opaque_names`,
    ``id_seed``) in prompts and targets, mapped back when parsing, so gold relations and scores keep the data
    set's ids.
    """
    if id_style not in ID_STYLES:
        raise TrainingError(f"id_style = {id_style!r}: must be one of {', '.join(map(repr, ID_STYLES))}")
    devices = dataset.topology.devices()
    if not devices:
        raise TrainingError("dataset: the topology has no sensor or gateway")
    degrees = dataset.topology.gateway_degrees()
    node_ids = [n.id for n in devices]
    names = opaque_names(dataset.topology.nodes, id_seed) if id_style == "opaque" else None
    pairs, gold, copyable = [], [], []
    for n in devices:
        facts = node_facts(dataset.topology, n.id)
        prompt = node_prompt(dataset.topology, n.id, degrees.get(n.id), names=names)
        pairs.append((prompt, facts_text(rename(facts, names))))
        gold.append(frozenset(facts))
        copyable.append(frozenset(r for r, spelled in zip(facts, rename(facts, names))
                                  if relation_copyable(spelled, prompt)))
    encoded = encode_pairs(tokenizer, pairs, max_length=max_length)
    vocab = None
    if restrict_vocab:
        vocab = output_vocabulary([encoded], causal_lm(model).lm_head.weight.shape[0], tokenizer.eos_token_id)
    compute_dtype = resolve_compute_dtype(compute_dtype, model_device(model).type)
    compute_autocast(model, compute_dtype)  # validates compute_dtype before the long pass
    frozen = None
    if cache:
        frozen = cached_frozen_states(model, encoded, inside=inside, batch_size=batch_size,
                                      compute_dtype=compute_dtype, progress=progress, step_cache=step_cache)
    return TwinTask(
        tokenizer=tokenizer, dataset=dataset, node_ids=node_ids, row_of={k: i for i, k in enumerate(node_ids)},
        gold=gold, encoded=encoded, vocab=vocab, frozen=frozen, max_length=max_length, compute_dtype=compute_dtype,
        names=names, copyable=copyable,
    )


def cached_frozen_states(model, encoded: Encoded, *, inside: bool, batch_size: int, compute_dtype: str,
                         progress: bool = False, step_cache=None) -> FrozenStates:
    """:func:`gentwin.frozen.frozen_states` from the lowest adapted layer (into it when ``inside``), kept in
    ``step_cache`` under the model's weights, the sequences and the compute settings."""
    start = split_layer(model)

    def compute() -> FrozenStates:
        return frozen_states(model, encoded, start, adapter=adapter_modules(model)[start] if inside else None,
                             batch_size=batch_size, compute_dtype=compute_dtype, progress=progress)

    if step_cache is None:
        return compute()
    inputs = {"model": list(model.state_dict().items()), "encoded": encoded, "inside": inside,
              "batch_size": batch_size, "compute_dtype": compute_dtype, "threads": torch.get_num_threads(),
              "device": str(model_device(model))}
    return step_cache.get_or_compute("frozen", inputs, compute, note=f"{len(encoded.lengths)} sequences")


def reset_adapters(model, seed: int) -> None:
    """Re-draw every Twin Adapter as :func:`gentwin.adapter.add_twin_adapters` would with ``seed``: ``W_D`` from a
    generator seeded with ``seed`` (layers in ascending order), ``W_U = 0``, so the model equals the backbone
    again and one loaded backbone serves every seed."""
    mods = adapter_modules(model)
    if not mods:
        raise TrainingError(f"model = {type(model).__name__}: has no Twin Adapters to reset")
    cfg = getattr(model, "twin_adapter_config", None)
    scale = getattr(cfg, "init_scale", 1.0)
    gen = torch.Generator().manual_seed(int(seed))
    for i in sorted(mods):
        mods[i].reset_parameters(scale, gen)


def _batch_hidden(model, task: TwinTask, rows: torch.Tensor,
                  path: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Final hidden states, labels and attention mask for ``rows``, trimmed to the batch's length."""
    dev = model_device(model)
    t = int(task.encoded.lengths[rows].max())
    att = task.encoded.attention_mask[rows, :t].to(dev)
    labels = task.encoded.labels[rows, :t].to(dev)
    if path == "cached" and task.frozen is None:
        raise TrainingError("path = 'cached': the task has no frozen states (prepare_task(..., cache=True))")
    if path not in ("cached", "plain"):
        raise TrainingError(f"path = {path!r}: must be 'cached' or 'plain'")
    with compute_autocast(model, task.compute_dtype):
        if path == "cached":
            h = top_hidden(model, task.frozen.take(rows, t, dev), att, task.frozen.layer,
                           adapter_modules(model).get(task.frozen.layer))
        else:
            h = full_hidden(model, task.encoded.input_ids[rows, :t].to(dev), att)
    return h, labels, att


@torch.no_grad()
def _teacher_forced(model, task: TwinTask, rows: Sequence[int], path: str, batch_size: int,
                    chunk: int = 1024) -> tuple[list[list[int]], list[float]]:
    """Arg-max next token at every target-predicting position of each row (``preds[k][t]`` follows position
    ``t``; -1 where ``t + 1`` is no target token), and each row's mean target loss."""
    rows = list(rows)
    preds: list[list[int]] = [[] for _ in rows]
    losses: list[float] = [0.0] * len(rows)
    # batches of similar length waste less compute on padding; results go back to the caller's order
    by_len = sorted(range(len(rows)), key=lambda k: int(task.encoded.lengths[rows[k]]))
    for s in range(0, len(rows), batch_size):
        pos = by_len[s: s + batch_size]
        b = torch.as_tensor([rows[k] for k in pos], dtype=torch.long)
        h, labels, _ = _batch_hidden(model, task, b, path)
        nxt = labels[:, 1:]
        keep = nxt != IGNORE
        h_sel, y_sel = h[:, :-1][keep], nxt[keep]
        best_parts, loss_parts = [], []
        for c in range(0, len(y_sel), chunk):
            with compute_autocast(model, task.compute_dtype):
                logits = head_logits(model, h_sel[c: c + chunk], _kept(task.vocab)).float()
            y = task.vocab.restrict(y_sel[c: c + chunk]) if task.vocab is not None else y_sel[c: c + chunk]
            loss_parts.append(F.cross_entropy(logits, y, reduction="none"))
            best = logits.argmax(-1)
            best_parts.append(task.vocab.ids.to(best.device)[best] if task.vocab is not None else best)
        grid = torch.full(nxt.shape, -1, dtype=torch.long, device=h.device)
        grid[keep] = torch.cat(best_parts)
        tok_loss = torch.zeros(nxt.shape, device=h.device)
        tok_loss[keep] = torch.cat(loss_parts)
        for k, pr, lo in zip(pos, grid.cpu().tolist(), (tok_loss.sum(1) / keep.sum(1)).tolist()):
            preds[k], losses[k] = pr, lo
    return preds, losses


def predict_triples(model, task: TwinTask, rows: Sequence[int], *, mode: str = "teacher_forced", path: str = "cached",
                    batch_size: int = 64, shortcut: bool = True, progress: bool = False
                    ) -> tuple[list[set[Relation]], list[float]]:
    """The triples the model produces for each row, and each row's teacher-forced target loss.

    ``"teacher_forced"``: a gold triple is produced when the arg-max next token equals the gold token at
    each of its positions (separator included); any other triple the arg-max spells there is a wrong one.
    ``"generate"``: greedy decoding from the prompt (at most :attr:`TwinTask.max_target_tokens` tokens); with
    ``shortcut``, decoding starts where the teacher-forced arg-max first leaves the gold sequence (greedy
    decoding agrees with it up to there), and a row that never leaves it is its target.
    """
    if mode not in ("teacher_forced", "generate"):
        raise TrainingError(f"eval_mode = {mode!r}: must be 'teacher_forced' or 'generate'")
    rows = list(rows)
    tok = task.tokenizer
    enc = task.encoded
    preds, losses = _teacher_forced(model, task, rows, path, batch_size)
    if mode == "generate" and not shortcut:
        produced = decode_triples(model, task, rows, task.max_target_tokens, batch_size=batch_size,
                                  progress=progress)
        return produced, losses
    produced: list[set[Relation]] = []
    open_rows: list[tuple[int, list[int], list[int]]] = []  # (k, prompt + target so far, target so far)
    for k, r in enumerate(rows):
        n = int(enc.lengths[r])
        gold_ids = enc.input_ids[r, :n].tolist()
        pred_next = preds[k]  # pred_next[t] predicts token t + 1
        if mode == "teacher_forced":
            got = set()
            for a, b in enc.spans[r]:
                guess = pred_next[a - 1: b - 1]
                gold_piece = task.parse(tok.decode(gold_ids[a:b]))
                if guess == gold_ids[a:b]:
                    got.update(gold_piece)
                else:  # not token-exact: whatever else the arg-max spells there is a wrong triple
                    got.update(set(task.parse(tok.decode(guess))) - set(gold_piece))
            produced.append(got)
            continue
        p_len = int(enc.prompt_lengths[r])
        first_bad = next((t for t in range(p_len, n) if pred_next[t - 1] != gold_ids[t]), None)
        if first_bad is None:
            produced.append(set(task.gold[r]))
            continue
        prefix = gold_ids[:first_bad] + [pred_next[first_bad - 1]]
        if prefix[-1] == tok.eos_token_id:  # the first wrong token ends the sequence early
            produced.append(set(task.parse(tok.decode(prefix[p_len:-1]))))
        else:
            produced.append(set())
            open_rows.append((k, prefix, prefix[p_len:]))
    if open_rows:
        # greedy decoding is deterministic per row: decode all for the longest remainder, then cut each
        budget = task.max_target_tokens
        remaining = max(1, budget - min(len(t) for _, _, t in open_rows))
        gen = greedy_generate(model, tok, [p for _, p, _ in open_rows], max_new_tokens=remaining,
                              kept_ids=_kept(task.vocab), batch_size=batch_size, compute_dtype=task.compute_dtype,
                              progress=progress)
        for (k, _, target_ids), g in zip(open_rows, gen):
            produced[k] = set(task.parse(tok.decode((target_ids + g)[:budget])))
    return produced, losses


def decode_triples(model, task: TwinTask, rows: Sequence[int], max_new_tokens: int, *, batch_size: int = 64,
                   progress: bool = False) -> list[set[Relation]]:
    """Greedy decoding from the prompts of ``rows`` alone (under the task's output vocabulary), parsed into triples."""
    enc = task.encoded
    prompts = [enc.input_ids[r, : int(enc.prompt_lengths[r])].tolist() for r in rows]
    out = greedy_generate(model, task.tokenizer, prompts, max_new_tokens=max_new_tokens, kept_ids=_kept(task.vocab),
                          batch_size=batch_size, compute_dtype=task.compute_dtype, progress=progress)
    return [set(task.parse(task.tokenizer.decode(ids))) for ids in out]


def evaluate(model, task: TwinTask, rows: Sequence[int], *, mode: str = "teacher_forced", l1_index: str = "union",
             path: str = "cached", batch_size: int = 64, progress: bool = False) -> dict[str, float]:
    """Accuracy, precision, eq. (9) L1 and mean target loss over the entities of ``rows``, and the accuracy
    split into relations copyable from the prompt and inferred ones (:func:`gentwin.metrics.class_accuracy`)."""
    rows = list(rows)
    if not rows:
        raise TrainingError("rows = []: no entity to evaluate")
    produced, losses = predict_triples(model, task, rows, mode=mode, path=path, batch_size=batch_size,
                                       progress=progress)
    scores = triple_scores([task.gold[r] for r in rows], produced, index=l1_index)
    if task.copyable is not None:
        scores.update(class_accuracy([task.gold[r] for r in rows], produced, [task.copyable[r] for r in rows]))
    scores["loss"] = float(np.mean(losses))
    scores["entities"] = float(len(rows))
    return scores


def make_optimizer(parameters: Iterable[torch.nn.Parameter], name: str, learning_rate: float) -> torch.optim.Optimizer:
    """``"sgd"`` (plain stochastic gradient descent, the reading of lr = 0.08) or ``"adamw"``."""
    params = [p for p in parameters if p.requires_grad]
    if not params:
        raise TrainingError("model: has no trainable parameter (add Twin Adapters or LoRA first)")
    if name == "sgd":
        return torch.optim.SGD(params, lr=learning_rate)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.0)
    raise TrainingError(f"optimizer = {name!r}: must be 'sgd' or 'adamw'")


def _trainable_modules_train(model, on: bool) -> None:
    """Train mode only where there are trainable parameters (adapter/LoRA dropout); the backbone stays in eval."""
    causal_lm(model).eval()
    if on:
        for m in model.modules():
            if any(p.requires_grad for p in m.parameters(recurse=False)):
                m.train()


def train_pass(model, task: TwinTask, rows: torch.Tensor, optimizer, batch_size: int, path: str) -> float:
    """One pass over ``rows`` in the given order; returns the mean batch loss."""
    _trainable_modules_train(model, True)
    losses = []
    try:
        for s in range(0, len(rows), batch_size):
            b = rows[s: s + batch_size]
            h, labels, _ = _batch_hidden(model, task, b, path)
            with compute_autocast(model, task.compute_dtype):
                loss = target_loss(model, h, labels, task.vocab)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
    finally:
        _trainable_modules_train(model, False)
    return float(np.mean(losses))


def pass_rows(rows: torch.Tensor, shuffle: bool, generator: torch.Generator) -> torch.Tensor:
    """The rows of one training pass: as given, or in a permutation drawn from ``generator``."""
    if not shuffle:
        return rows
    return rows[torch.randperm(len(rows), generator=generator)]


def eval_rows(task: TwinTask, train_rows: torch.Tensor, split: str) -> list[int]:
    """The rows a split names: ``"train"`` = the unique nodes of ``train_rows``, ``"all"``, or a data-set split."""
    if split == "train":
        return sorted(set(train_rows.tolist()))
    if split == "all":
        return list(range(len(task.node_ids)))
    rows = task.split_rows(split)
    if not rows:
        raise TrainingError(f"eval split = {split!r}: has no instance")
    return rows


def adapter_state(model) -> dict[str, torch.Tensor]:
    """A copy of every trainable parameter (the Twin Adapters), by name."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def load_adapter_state(model, state: dict[str, torch.Tensor]) -> None:
    """Put :func:`adapter_state`'s copy back into the model's trainable parameters."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if set(params) != set(state):
        raise TrainingError("state: its parameters are not this model's trainable parameters")
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(state[n])


def train_trajectory(model, task: TwinTask, passes: Sequence[torch.Tensor], config: TrainingConfig, *, seed: int,
                     path: str = "cached", desc: str = "passes", progress: bool = False, step_cache=None
                     ) -> list[dict[str, Any]]:
    """Algorithm 1 lines 9-10: one training pass over each element of ``passes`` (rows of ``task``).

    Pass ``e`` (0-based) has learning rate ``learning_rate * discount_factor ** e``; ``seed`` draws the
    permutations (``config.shuffle_passes``) and adapter dropout, not the initialisation.  Returns a record
    for the start and one per pass: ``train_loss``, ``lr``, ``seconds``, ``state`` (:func:`adapter_state`).
    ``step_cache`` reuses a trajectory trained on the same inputs; the model ends in the last pass's state.
    """
    def compute() -> list[dict[str, Any]]:
        records = [dict(train_loss=float("nan"), lr=0.0, seconds=0.0, state=adapter_state(model))]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            optimizer = make_optimizer(model.parameters(), config.optimizer, config.learning_rate)
            scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=config.discount_factor)
            gen = torch.Generator().manual_seed(int(seed))
            bar = progress_bar(passes, desc=f"{desc} (seed {seed})", disable=not progress, leave=False)
            for rows in bar:
                lr = optimizer.param_groups[0]["lr"]
                t0 = time.perf_counter()
                loss = train_pass(model, task, pass_rows(rows, config.shuffle_passes, gen), optimizer,
                                  config.batch_size, path)
                records.append(dict(train_loss=loss, lr=lr, seconds=time.perf_counter() - t0,
                                    state=adapter_state(model)))
                scheduler.step()
                bar.set_postfix(loss=f"{loss:.3f}")
        return records

    if step_cache is None:
        return compute()
    # everything the trajectory depends on: the weights (adapters as initialised), the task's tensors, the passes
    training = {f: getattr(config, f) for f in ("optimizer", "learning_rate", "discount_factor", "batch_size",
                                                 "shuffle_passes")}
    inputs = {"model": list(model.state_dict().items()), "encoded": task.encoded, "vocab": task.vocab,
              "frozen": task.frozen, "compute_dtype": task.compute_dtype, "passes": list(passes),
              "training": training, "seed": int(seed), "path": path}
    records = step_cache.get_or_compute("trajectory", inputs, compute, note=f"{desc}, seed {seed}")
    load_adapter_state(model, records[-1]["state"])
    return records


def train_twin(model, task: TwinTask, order: Sequence[Instance], config: TrainingConfig, *, seed: int,
               epochs: int | None = None, eval_splits: Sequence[str] = ("train", "validation"),
               eval_mode: str | None = None, eval_every: int = 1, path: str = "cached", progress: bool = False,
               step_cache=None):
    """Algorithm 1 lines 9-12: train the adapters on ``order`` (in this order every epoch), scoring each epoch.

    Training is :func:`train_trajectory`, one pass over ``order`` per epoch; the scores are computed
    afterwards from each epoch's saved adapters, so a ``step_cache`` holding the trajectory only scores.
    ``eval_splits`` (``"train"`` = the nodes of ``order``, ``"validation"``, ``"test"``, ``"all"``) are scored
    before training, after every ``eval_every``-th epoch and after the last.  Returns a DataFrame with one row
    per scored epoch (0 = before training) and split (``"none"`` for an unscored epoch); the model is left
    as trained.
    """
    items = list(order)
    if not items:
        raise TrainingError("order = []: the training split is empty; nothing to train on")
    n_epochs = config.epochs if epochs is None else epochs
    check_int("epochs", n_epochs, low=1, error=TrainingError)
    check_int("eval_every", eval_every, low=1, error=TrainingError)
    mode = config.eval_mode if eval_mode is None else eval_mode
    rows = task.rows(items)
    split_rows = {s: eval_rows(task, rows, s) for s in eval_splits}
    trajectory = train_trajectory(model, task, [rows] * n_epochs, config, seed=seed, path=path, desc="epochs",
                                  progress=progress, step_cache=step_cache)
    records: list[dict[str, Any]] = []
    for epoch, step in enumerate(trajectory):
        row = dict(epoch=epoch, seed=seed, train_loss=step["train_loss"], lr=step["lr"], seconds=step["seconds"])
        if (epoch % eval_every and epoch != n_epochs) or not split_rows:
            records.append(dict(row, split="none"))
            continue
        load_adapter_state(model, step["state"])
        for split, er in split_rows.items():
            sc = evaluate(model, task, er, mode=mode, l1_index=config.l1_index, path=path,
                          batch_size=config.eval_batch_size)
            records.append(dict(row, split=split, **sc))
    load_adapter_state(model, trajectory[-1]["state"])
    return pd.DataFrame(records)


def extract_graph(model, task: TwinTask, *, mode: str = "generate", batch_size: int = 64,
                  progress: bool = False) -> set[Relation]:
    """Algorithm 1 line 11: E of the generated graph G, every triple the model produces for each device
    node's (k, v) pair (compare with :func:`gentwin.metrics.compare_graph`)."""
    produced, _ = predict_triples(model, task, range(len(task.node_ids)), mode=mode, batch_size=batch_size,
                                  progress=progress)
    return set().union(*produced)
