"""Tests of gentwin.cache: keys, verified entries, corrupt entries, and the cached training and page steps."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from gentwin import cache as C
from gentwin import training as T
from gentwin.experiments import pipeline

pytestmark = pytest.mark.usefixtures("one_thread")


def counting(value):
    calls = []

    def compute():
        calls.append(1)
        return value

    return compute, calls


def test_fingerprint_separates_content_not_objects():
    a = torch.arange(6, dtype=torch.float32)
    assert C.fingerprint(a) == C.fingerprint(a.clone())
    assert C.fingerprint(a) != C.fingerprint(a.reshape(2, 3))  # same bytes, other shape
    assert C.fingerprint(a) != C.fingerprint(a.double())  # same values, other dtype
    assert C.fingerprint(["ab", "c"]) != C.fingerprint(["a", "bc"])  # no ambiguity from concatenation
    assert C.fingerprint({"x": 1}) != C.fingerprint({"x": True})
    with pytest.raises(TypeError, match="cannot hash a object"):
        C.fingerprint(object())


def test_entry_is_reused_and_keys_follow_inputs_and_code(tmp_path, monkeypatch):
    cache = C.StepCache(tmp_path)
    compute, calls = counting({"v": torch.ones(3)})
    first = cache.get_or_compute("s", {"a": 1}, compute)
    again = cache.get_or_compute("s", {"a": 1}, compute)
    assert len(calls) == 1 and torch.equal(first["v"], again["v"])
    cache.get_or_compute("s", {"a": 2}, compute)  # other inputs: another entry
    cache.get_or_compute("other", {"a": 1}, compute)  # other step: another entry
    assert len(calls) == 3
    # another version of the package's code never reuses an entry
    monkeypatch.setattr(C, "code_digest", lambda package=None: "another version")
    cache.get_or_compute("s", {"a": 1}, compute)
    assert len(calls) == 4


def test_code_digest_changes_with_any_source_file(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "sub" / "b.py").write_text("y = 2\n")
    before = C.code_digest(tmp_path)
    (tmp_path / "sub" / "b.py").write_text("y = 3\n")
    assert C.code_digest(tmp_path) != before
    (tmp_path / "sub" / "b.py").write_text("y = 2\n")
    assert C.code_digest(tmp_path) == before


@pytest.mark.parametrize("damage", ["truncate", "flip", "no payload", "bad manifest"])
def test_a_corrupt_entry_is_recomputed_never_trusted(tmp_path, damage):
    lines: list[str] = []
    cache = C.StepCache(tmp_path, log=lines.append)
    compute, calls = counting(list(range(1000)))
    cache.get_or_compute("s", {"a": 1}, compute)
    key = cache.key("s", {"a": 1})
    payload, manifest = cache._paths("s", key)
    data = payload.read_bytes()
    if damage == "truncate":
        payload.write_bytes(data[: len(data) // 2])
    elif damage == "flip":  # same length, one byte changed: only the checksum can tell
        payload.write_bytes(data[:100] + bytes([data[100] ^ 1]) + data[101:])
    elif damage == "no payload":
        payload.unlink()
    else:
        manifest.write_text("{not json")
    value = cache.get_or_compute("s", {"a": 1}, compute)
    assert value == list(range(1000)) and len(calls) == 2
    assert any("rejected s entry" in line and "recomputing" in line for line in lines)
    # the recomputed entry was written again, whole, and is trusted next time
    meta = json.loads(manifest.read_text())
    assert meta["bytes"] == len(payload.read_bytes())
    cache.get_or_compute("s", {"a": 1}, compute)
    assert len(calls) == 2


def test_environment_chooses_folder_or_off(tmp_path, monkeypatch):
    monkeypatch.setenv(C.ENV_FOLDER, str(tmp_path / "c"))
    monkeypatch.delenv(C.ENV_OFF, raising=False)
    assert C.from_environment().folder == tmp_path / "c" / "steps"
    monkeypatch.setenv(C.ENV_OFF, "1")
    off = C.from_environment()
    compute, calls = counting(5)
    assert off.folder is None and off.get_or_compute("s", 1, compute) == 5 and off.get_or_compute("s", 1, compute) == 5
    assert len(calls) == 2 and not (tmp_path / "c").exists()


# --- the cached steps of training ----------------------------------------------------------------


@pytest.fixture
def toy_task(tiny_adapted, toy_ds):
    model, tok = tiny_adapted
    return model, T.prepare_task(model, tok, toy_ds, max_length=256)


def test_trajectory_from_cache_equals_training(toy_task, toy_config, tmp_path):
    model, task = toy_task
    cfg = toy_config(shuffle_passes=True)
    rows = task.rows(pipeline.training_instances(task.dataset, cfg))
    T.reset_adapters(model, 3)
    plain = T.train_trajectory(model, task, [rows] * 3, cfg, seed=3)
    lines: list[str] = []
    cache = C.StepCache(tmp_path, log=lines.append)
    for expected in ("computed", "reused"):
        T.reset_adapters(model, 3)
        got = T.train_trajectory(model, task, [rows] * 3, cfg, seed=3, step_cache=cache)
        assert lines[-1].startswith(f"cache: {expected}") or lines[-1].startswith(f"cache: {expected} and stored")
        assert [r["train_loss"] for r in got][1:] == [r["train_loss"] for r in plain][1:]
        for a, b in zip(got, plain):
            assert all(torch.equal(a["state"][n], b["state"][n]) for n in a["state"])
        # the model is left as after the last pass, whether trained or loaded
        assert all(torch.equal(p, plain[-1]["state"][n]) for n, p in model.named_parameters() if p.requires_grad)
    T.reset_adapters(model, 4)  # another initialisation is another trajectory
    T.train_trajectory(model, task, [rows] * 3, cfg, seed=3, step_cache=cache)
    assert lines[-1].startswith("cache: computed")


def test_scores_of_epoch_e_are_those_of_training_e_epochs(toy_task, toy_config):
    # scoring after training from kept states must equal scoring right after training that long
    model, task = toy_task
    cfg = toy_config()
    train = pipeline.training_instances(task.dataset, cfg)
    T.reset_adapters(model, 1)
    long = T.train_twin(model, task, train, cfg, seed=1, epochs=3, eval_splits=("train",))
    T.reset_adapters(model, 1)
    short = T.train_twin(model, task, train, cfg, seed=1, epochs=2, eval_splits=("train",))
    cols = ["accuracy", "l1", "loss", "train_loss"]
    assert long[long.epoch <= 2][cols].reset_index(drop=True).equals(short[cols].reset_index(drop=True))
    assert long.loss.iloc[-1] != short.loss.iloc[-1]  # epoch 3 did change the model


def test_rescoring_with_another_eval_mode_trains_nothing(toy_task, toy_config, tmp_path):
    model, task = toy_task
    cfg = toy_config()
    train = pipeline.training_instances(task.dataset, cfg)
    lines: list[str] = []
    cache = C.StepCache(tmp_path, log=lines.append)
    T.reset_adapters(model, 2)
    T.train_twin(model, task, train, cfg, seed=2, epochs=2, eval_splits=("train",), step_cache=cache)
    T.reset_adapters(model, 2)
    cached = T.train_twin(model, task, train, cfg, seed=2, epochs=2, eval_splits=("train",), eval_mode="generate",
                          step_cache=cache)
    assert lines[-1].startswith("cache: reused trajectory")
    T.reset_adapters(model, 2)
    fresh = T.train_twin(model, task, train, cfg, seed=2, epochs=2, eval_splits=("train",), eval_mode="generate")
    cols = ["epoch", "accuracy", "precision", "l1", "train_loss"]
    assert cached[cols].equals(fresh[cols])


def test_frozen_pass_is_kept_and_checked(tiny_adapted, toy_ds, tmp_path):
    model, tok = tiny_adapted
    cache = C.StepCache(tmp_path)
    plain = T.prepare_task(model, tok, toy_ds, max_length=256)
    for _ in range(2):
        task = T.prepare_task(model, tok, toy_ds, max_length=256, step_cache=cache)
        assert torch.equal(task.frozen.residual, plain.frozen.residual)
        assert torch.equal(task.frozen.mlp_out, plain.frozen.mlp_out)
    assert len(list((tmp_path / "frozen").rglob("*.pkl"))) == 1


# --- pages -----------------------------------------------------------------------------------------


def test_a_page_with_the_same_inputs_is_reused_with_its_files(tmp_path, write_chapter, monkeypatch):
    from gentwin import notebook

    monkeypatch.delenv("PYTEST_CURRENT_TEST", raising=False)
    (tmp_path / "notebooks").mkdir()
    src = write_chapter(tmp_path / "notebooks" / "t.md", ("parameters", "n_sensors = None"),
                        ("", "import pathlib, time\n"
                             "p = pathlib.Path('book/executed/figures/t/x.csv')\n"
                             "p.parent.mkdir(parents=True, exist_ok=True)\n"
                             "p.write_text(f'{n_sensors},{time.time_ns()}')\nprint(p.read_text())"))
    out = tmp_path / "book" / "executed" / "t.ipynb"
    side = tmp_path / "book" / "executed" / "figures" / "t" / "x.csv"
    lines: list[str] = []
    cache = C.StepCache(tmp_path / "cache", log=lines.append)
    notebook.execute(src, out, {"n_sensors": 3}, cwd=tmp_path, step_cache=cache, log=lines.append)
    first_page, first_side, stamp = out.read_bytes(), side.read_text(), out.stat().st_mtime_ns
    side.unlink()
    notebook.execute(src, out, {"n_sensors": 3}, cwd=tmp_path, step_cache=cache, log=lines.append)
    assert any("reused from the cache" in line for line in lines)
    assert out.read_bytes() == first_page and out.stat().st_mtime_ns == stamp  # not rewritten
    assert side.read_text() == first_side  # the page's own file is written back
    notebook.execute(src, out, {"n_sensors": 4}, cwd=tmp_path, step_cache=cache, log=lines.append)
    assert side.read_text().startswith("4,")  # other parameters: executed again
    src.write_text(src.read_text().replace("print(p.read_text())", "print(p.read_text(), 1)"))
    notebook.execute(src, out, {"n_sensors": 3}, cwd=tmp_path, step_cache=cache, log=lines.append)
    assert side.read_text() != first_side  # another source: executed again (the time differs)


def test_a_page_that_reads_pages_depends_on_those_before_it_only(tmp_path, chapter_front):
    from gentwin import notebook

    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n  - file: book/executed/a\n"
                                       "  - file: book/executed/b\n  - file: book/executed/c\n")
    (tmp_path / "intro.md").write_text("# Intro\n")
    (tmp_path / "notebooks").mkdir()
    for name in "abc":
        body = "read = 'book/executed'" if name == "b" else "x = 1"
        (tmp_path / "notebooks" / f"{name}.md").write_text(chapter_front + f"```{{code-cell}} ipython3\n{body}\n```\n")
    executed = tmp_path / "book" / "executed"
    executed.mkdir(parents=True)

    def key(name):
        src = tmp_path / "notebooks" / f"{name}.md"
        return C.fingerprint(notebook.page_inputs(src, {}, tmp_path, executed / f"{name}.ipynb"))

    (executed / "a.ipynb").write_text("a1")
    (executed / "c.ipynb").write_text("c1")
    before = key("b"), key("a")
    (executed / "c.ipynb").write_text("c2")  # a page after b: b does not read it
    assert (key("b"), key("a")) == before
    (executed / "a.ipynb").write_text("a2")  # a page before b changed: b must run again
    assert key("b") != before[0] and key("a") == before[1]  # a page that reads no page ignores the others


def test_simulations_and_episodes_are_kept_per_settings(tmp_path):
    from gentwin.config import resolve
    from gentwin.experiments.fig8 import run_fig8
    from gentwin.experiments.table4 import run_table4

    lines: list[str] = []
    cache = C.StepCache(tmp_path, log=lines.append)
    settings = resolve("quick", store="networkx")
    first = run_table4(settings, step_cache=cache)
    again = run_table4(settings, step_cache=cache)
    assert lines[-1].startswith("cache: reused table4") and again.frame.equals(first.frame)
    other = run_table4(resolve("quick", store="networkx", packet_loss=0.05), step_cache=cache)
    assert lines[-1].startswith("cache: computed") and not other.frame.equals(first.frame)
    runs = run_fig8(settings, show_progress=False, step_cache=cache).runs
    assert run_fig8(settings, show_progress=False, step_cache=cache).runs.equals(runs)  # the same measured times
    assert lines[-1].startswith("cache: reused fig8")
