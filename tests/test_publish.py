"""Publishing: the GitHub Actions workflow passes actionlint, and `make publish-html` puts the book, its
downloads included, on gh-pages."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "book.yml"
ACTIONLINT = shutil.which("actionlint")
GIT_ENV = {"GIT_AUTHOR_NAME": "gentwin test", "GIT_AUTHOR_EMAIL": "test@example.invalid",
           "GIT_COMMITTER_NAME": "gentwin test", "GIT_COMMITTER_EMAIL": "test@example.invalid"}


def _actionlint(path: Path) -> subprocess.CompletedProcess[str]:
    if ACTIONLINT is None:
        pytest.skip("actionlint not installed (`make test` builds it through .ci/system-deps)")
    return subprocess.run([ACTIONLINT, "-no-color", str(path)], capture_output=True, text=True)


def test_workflow_passes_actionlint():
    proc = _actionlint(WORKFLOW)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_actionlint_rejects_a_broken_workflow(tmp_path):
    # the check above must be able to fail: an unknown context and a job needing a missing job
    broken = tmp_path / ".github" / "workflows" / "broken.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text("on: push\njobs:\n  a:\n    needs: nowhere\n    runs-on: ubuntu-24.04\n"
                      "    steps:\n      - run: echo ${{ github.no_such_thing }}\n")
    proc = _actionlint(broken)
    assert proc.returncode != 0
    assert "nowhere" in proc.stdout


def test_workflow_tests_builds_both_profiles_and_deploys_only_from_main_or_tags():
    wf = yaml.safe_load(WORKFLOW.read_text())
    jobs = wf["jobs"]
    runs = lambda job: " ".join(step.get("run", "") for step in jobs[job]["steps"])  # noqa: E731
    assert "make test" in runs("test")
    assert jobs["book"]["needs"] == "test" and "make book" in runs("book")
    profile = next(s for s in jobs["book"]["steps"] if "make book" in s.get("run", ""))["env"]["PROFILE"]
    assert "pull_request" in profile and "'quick'" in profile and "'paper'" in profile
    assert jobs["deploy"]["if"] == "github.event_name != 'pull_request'"
    assert any("deploy-pages" in s.get("uses", "") for s in jobs["deploy"]["steps"])
    triggers = wf[True] if True in wf else wf["on"]  # YAML 1.1 reads the key `on` as True
    assert triggers["push"]["branches"] == ["main"] and "tags" in triggers["push"]


def publish_html(root: Path, remote: str | None = "origin") -> subprocess.CompletedProcess[str]:
    """Run the Makefile's publish-html target in ``root`` (a git clone holding _build/html)."""
    args = ["make", "-s", "-f", str(ROOT / "Makefile"), "-C", str(root), "publish-html",
            f"BIN={Path(sys.executable).parent}"]
    if remote is None:
        args.append("PUBLISH_REMOTE=")
    return subprocess.run(args, capture_output=True, text=True, env={**os.environ, **GIT_ENV})


def clone_with_bare_remote(tmp_path: Path) -> tuple[Path, Path]:
    bare, work = tmp_path / "remote.git", tmp_path / "work"
    git = lambda *a, cwd=tmp_path: subprocess.run(["git", *a], cwd=cwd, check=True, capture_output=True,  # noqa: E731
                                                  env={**os.environ, **GIT_ENV})
    git("init", "-q", "--bare", str(bare))
    git("init", "-q", "-b", "main", str(work))
    (work / "README.md").write_text("a project\n")
    git("add", "README.md", cwd=work)
    git("commit", "-q", "-m", "start", cwd=work)
    git("remote", "add", "origin", str(bare), cwd=work)
    return work, bare


def gh_pages_files(bare: Path) -> list[str]:
    out = subprocess.run(["git", "--git-dir", str(bare), "ls-tree", "-r", "--name-only", "gh-pages"],
                         capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_publish_html_pushes_the_book_to_gh_pages_of_a_bare_remote(tmp_path):
    work, bare = clone_with_bare_remote(tmp_path)
    html = work / "_build" / "html"
    (html / "book").mkdir(parents=True)
    (html / "index.html").write_text("<html>GenTwin, reproduced</html>")
    (html / "book" / "errata.html").write_text("<html>errata</html>")
    # the downloads (figure files, notebook sources) live in folders starting with "_", which
    # GitHub Pages would hide without .nojekyll
    (html / "_downloads" / "0f3a").mkdir(parents=True)
    (html / "_downloads" / "0f3a" / "curves.csv").write_text("round,mean\n1,0.5\n")
    (html / "_sources" / "book").mkdir(parents=True)
    (html / "_sources" / "book" / "fig6.ipynb").write_text("{}")
    proc = publish_html(work)
    assert proc.returncode == 0, proc.stderr
    assert sorted(gh_pages_files(bare)) == [".nojekyll", "_downloads/0f3a/curves.csv", "_sources/book/fig6.ipynb",
                                            "book/errata.html", "index.html"]
    shown = subprocess.run(["git", "--git-dir", str(bare), "show", "gh-pages:index.html"],
                           capture_output=True, text=True, check=True).stdout
    assert shown == "<html>GenTwin, reproduced</html>"
    # the user's branch is untouched
    assert subprocess.run(["git", "-C", str(work), "branch", "--show-current"], capture_output=True,
                          text=True).stdout.strip() == "main"


def test_publish_html_without_a_built_book_fails_and_pushes_nothing(tmp_path):
    work, bare = clone_with_bare_remote(tmp_path)
    proc = publish_html(work)
    assert proc.returncode != 0
    assert "_build/html/index.html is missing" in proc.stderr
    refs = subprocess.run(["git", "--git-dir", str(bare), "branch", "--list", "gh-pages"],
                          capture_output=True, text=True).stdout
    assert refs.strip() == ""
