"""Tests for gentwin.provenance: git state, weights checksum, changed parameters, the re-run command, the box."""
from __future__ import annotations

import hashlib
import os
import subprocess

from gentwin import config
from gentwin.provenance import changed_from_paper, git_state, provenance, rerun_command, weights_sha256

GIT_ENV = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}


def _git(*args, cwd):
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True, env=GIT_ENV).stdout


def test_git_state_reports_the_commit_and_dirtiness(tmp_path):
    assert git_state(tmp_path) == ("not a git checkout", False)
    _git("init", "-q", cwd=tmp_path)
    (tmp_path / "a.txt").write_text("one\n")
    _git("add", "a.txt", cwd=tmp_path)
    _git("commit", "-q", "-m", "one", cwd=tmp_path)
    head = _git("rev-parse", "HEAD", cwd=tmp_path).strip()
    assert git_state(tmp_path) == (head, False)
    (tmp_path / "build.out").write_text("untracked output\n")  # does not make the tree dirty
    assert git_state(tmp_path) == (head, False)
    (tmp_path / "a.txt").write_text("two\n")
    assert git_state(tmp_path) == (head, True)


def test_weights_sha256_hashes_the_safetensors_files_in_name_order(tmp_path):
    assert weights_sha256(tmp_path) is None
    (tmp_path / "b.safetensors").write_bytes(b"BBB")
    (tmp_path / "a.safetensors").write_bytes(b"AA")
    (tmp_path / "config.json").write_text("{}")  # not weights
    assert weights_sha256(tmp_path) == hashlib.sha256(b"AABBB").hexdigest()


def test_changed_from_paper_lists_only_differences():
    quick = changed_from_paper(config.resolve("quick"))
    assert quick["n_sensors"] == 24 and quick["n_gateways"] == 6
    assert "learning_rate" not in quick  # the quick profile keeps the paper's rate
    assert changed_from_paper(config.resolve("paper", learning_rate=0.01)) == {"learning_rate": 0.01}


def test_rerun_command_round_trips_through_the_parameter_parser():
    cmd = rerun_command("setup", "quick", {"n_sensors": 30, "split": (0.6, 0.2, 0.2), "n_services": None})
    assert cmd == "gentwin run notebooks/setup.md -p profile quick -p n_sensors 30 -p split 0.6,0.2,0.2"
    # every -p value parses back to the value that was set
    pairs = cmd.split(" -p ")[1:]
    parsed = {name: value for name, value in (p.split(" ", 1) for p in pairs)}
    assert config.coerce("n_sensors", parsed["n_sensors"]) == 30
    assert config.coerce("split", parsed["split"]) == (0.6, 0.2, 0.2)
    assert rerun_command("fig7", "paper", {}) == "gentwin run notebooks/fig7.md"


def test_the_box_carries_every_field(tmp_path):
    p = provenance("setup", config.resolve("quick", n_sensors=30), {"n_sensors": 30}, started=100.0, now=112.5,
                   seeds=[0, 1], root=tmp_path)
    box = p.markdown()
    assert p.wall_s == 12.5 and "12.5 s" in box
    assert "not a git checkout" in box and "`quick`" in box and "`n_sensors = 30`" in box
    assert "0, 1" in box
    for name in ("torch", "transformers", "peft", "networkx", "neo4j"):
        assert f"{name} " in box
    assert "gentwin run notebooks/setup.md -p profile quick -p n_sensors 30" in box
    assert box.startswith("```{admonition} Provenance of this page") and box.rstrip().endswith("```")


def test_wall_time_defaults_to_the_age_of_this_process(tmp_path):
    import time

    from gentwin.provenance import _process_started

    age = time.perf_counter() - _process_started()
    assert 0 < age < 24 * 3600  # this pytest process started before the test, not long ago
    p = provenance("setup", config.resolve("quick"), {}, root=tmp_path)
    assert p.wall_s >= age - 1e-6
