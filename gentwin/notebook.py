"""Run the book's jupytext notebooks with checked parameters, and build the book.

Every chapter of the book is a jupytext MyST notebook ``notebooks/NAME.md``
whose ``parameters`` cell holds only assignments such as
``n_sensors = None  # from the profile``.  This module

* reads that cell (:func:`read_parameters`),
* checks command-line overrides against it and against :mod:`gentwin.config`
  *before anything runs* (:func:`check_parameters`),
* executes the notebook through papermill into ``book/executed/NAME.ipynb``,
  replacing the previous output only when every cell succeeded
  (:func:`execute`), and
* runs every notebook of ``_toc.yml`` in order and builds the Jupyter Book
  with warnings as errors (:func:`build_book`).

Errors are :class:`ParameterError` (bad input: nothing ran, nothing changed),
:class:`ExecutionError` (a cell raised: the previous output is untouched) and
:class:`NotebookError` for everything else (a malformed notebook or TOC, a
failed book build).

Examples
--------
>>> src = 'profile = "paper"  # where defaults come from\\nn_sensors = None  # sensors'
>>> parse_parameters_source(src)
{'profile': ('paper', 'where defaults come from'), 'n_sensors': (None, 'sensors')}
"""

from __future__ import annotations

import ast
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tokenize
from pathlib import Path
from typing import Any, Callable, Mapping

from . import config

__all__ = [
    "NotebookError",
    "ParameterError",
    "ExecutionError",
    "EXECUTED_DIR",
    "parse_parameters_source",
    "read_parameters",
    "check_parameters",
    "output_path_for",
    "execute",
    "toc_notebooks",
    "build_book",
    "find_root",
]

#: Where executed notebooks go, relative to the book's root (the folder the TOC reads).
EXECUTED_DIR = Path("book") / "executed"
#: Where the jupytext sources live, relative to the book's root.
SOURCE_DIR = Path("notebooks")

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class NotebookError(Exception):
    """A notebook, the table of contents or the book build is not usable."""


class ParameterError(NotebookError, ValueError):
    """A ``-p NAME VALUE`` override was rejected; nothing was run or changed."""


class ExecutionError(NotebookError, RuntimeError):
    """A cell of the notebook raised; the previous output was left untouched."""


# ---------------------------------------------------------------------------
# The parameters cell
# ---------------------------------------------------------------------------


def _line_comments(source: str) -> dict[int, str]:
    """Trailing ``# comment`` text by (1-based) line number of ``source``."""
    out: dict[int, str] = {}
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                out[tok.start[0]] = tok.string.lstrip("#").strip()
    except (tokenize.TokenError, IndentationError):  # ast.parse reports the real problem
        pass
    return out


def parse_parameters_source(source: str, where: str = "parameters cell", first_line: int = 1) -> dict[str, tuple[Any, str]]:
    """Parse the source of a ``parameters`` cell into ``{name: (default, comment)}``.

    Parameters
    ----------
    source : str
        The cell's code: only assignments ``name = <literal>  # comment``.
    where : str
        Names the notebook in error messages.
    first_line : int
        Line number (in the notebook file) of the cell's first line, so that
        errors point at the right line of the file.

    Raises
    ------
    NotebookError
        For a syntax error, a statement that is not a single-name assignment,
        a value that is not a literal, or a name assigned twice; the message
        names ``where`` and the line.

    Examples
    --------
    >>> parse_parameters_source("n_gateways = None  # gateways\\nsplit = (0.7, 0.15, 0.15)")
    {'n_gateways': (None, 'gateways'), 'split': ((0.7, 0.15, 0.15), '')}
    >>> parse_parameters_source("import os", where="nb.md", first_line=10)
    Traceback (most recent call last):
    ...
    gentwin.notebook.NotebookError: nb.md, line 10: the parameters cell may hold only assignments `name = value`, found Import
    """
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        line = first_line + (exc.lineno or 1) - 1
        raise NotebookError(f"{where}, line {line}: the parameters cell is not valid Python ({exc.msg})") from None
    comments = _line_comments(source)
    out: dict[str, tuple[Any, str]] = {}
    for stmt in tree.body:
        line = first_line + stmt.lineno - 1
        if isinstance(stmt, ast.AnnAssign) and stmt.value is not None and isinstance(stmt.target, ast.Name):
            target, value = stmt.target, stmt.value
        elif isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            target, value = stmt.targets[0], stmt.value
        else:
            raise NotebookError(
                f"{where}, line {line}: the parameters cell may hold only assignments `name = value`, "
                f"found {type(stmt).__name__}"
            )
        try:
            default = ast.literal_eval(value)
        except ValueError:
            raise NotebookError(
                f"{where}, line {line}: {target.id} = {ast.unparse(value)}: the value must be a literal "
                "(a number, string, True/False, None or a tuple of those)"
            ) from None
        if target.id in out:
            raise NotebookError(f"{where}, line {line}: parameter {target.id!r} is assigned twice")
        out[target.id] = (default, comments.get(stmt.lineno, ""))
    return out


def _parameters_cell(nb: Any, where: str) -> tuple[int, Any]:
    found = [(k, c) for k, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    if not found:
        raise NotebookError(f"{where}: no cell is tagged `parameters`")
    if len(found) > 1:
        raise NotebookError(f"{where}: {len(found)} cells are tagged `parameters`; there must be exactly one")
    return found[0]


def read_parameters(path: str | os.PathLike) -> dict[str, tuple[Any, str]]:
    """The parameters a notebook takes: ``{name: (default, trailing comment)}``.

    ``path`` is a jupytext MyST notebook; the cell tagged ``parameters`` is
    parsed with ``ast`` (never executed).  Errors name the notebook and the
    line of the file.
    """
    import jupytext

    path = Path(path)
    if not path.is_file():
        raise NotebookError(f"notebook {str(path)!r} does not exist")
    try:
        nb = jupytext.read(path)
    except Exception as exc:  # jupytext raises many kinds
        raise NotebookError(f"{path}: cannot be read as a jupytext notebook ({exc})") from None
    _, cell = _parameters_cell(nb, str(path))
    text = path.read_text(encoding="utf-8")
    pos = text.find(cell.source) if cell.source else -1
    first_line = text.count("\n", 0, pos) + 1 if pos >= 0 else 1
    return parse_parameters_source(cell.source, where=str(path), first_line=first_line)


def check_parameters(path: str | os.PathLike, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Check ``-p NAME VALUE`` overrides before anything runs; return them typed.

    Parameters
    ----------
    path : path-like
        The jupytext notebook.
    overrides : mapping
        Parameter names and values; strings (from the command line) are
        converted with :func:`gentwin.config.coerce`.

    Returns
    -------
    dict
        The overrides with their declared types (e.g. ``{"n_sensors": 30}``).

    Raises
    ------
    ParameterError
        For a name the notebook does not take, an unknown profile, a value of
        the wrong type or out of its documented range (the message names the
        parameter and the value), or a parameters cell whose names are not
        :mod:`gentwin.config` fields (a bug in the notebook).
    """
    path = Path(path)
    declared = read_parameters(path)
    known = set(config.field_names())
    strays = [n for n in declared if n != "profile" and n not in known]
    if strays:
        raise ParameterError(
            f"{path}: the parameters cell declares {', '.join(strays)}, which "
            f"{'is not a gentwin.config field' if len(strays) == 1 else 'are not gentwin.config fields'} "
            "(every notebook parameter must be one, so it can be checked)"
        )
    typed: dict[str, Any] = {}
    for name, value in overrides.items():
        if name not in declared:
            extra = " (it is a gentwin.config parameter, but this notebook does not use it)" if name in known else ""
            raise ParameterError(
                f"unknown parameter {name!r} = {value!r} for {path}{extra}; "
                f"known parameters: {', '.join(declared)}"
            )
        if name == "profile":
            if value not in config.PROFILES:
                raise ParameterError(
                    f"profile = {value!r}: must be one of {', '.join(map(repr, config.PROFILES))}"
                )
            typed[name] = value
            continue
        try:
            typed[name] = config.coerce(name, value) if isinstance(value, str) else value
        except config.ConfigError as exc:
            raise ParameterError(str(exc)) from None
    profile = typed.get("profile", declared.get("profile", ("paper", ""))[0])
    values = {n: d for n, (d, _) in declared.items() if n != "profile"}
    values.update({n: v for n, v in typed.items() if n != "profile"})
    try:
        config.resolve(profile, **values)
    except config.ConfigError as exc:
        raise ParameterError(str(exc)) from None
    return typed


# ---------------------------------------------------------------------------
# Execution
# ---------------------------------------------------------------------------


def output_path_for(source: str | os.PathLike, root: str | os.PathLike) -> Path:
    """Where ``gentwin run`` writes a notebook: ``root/book/executed/NAME.ipynb``.

    >>> output_path_for("notebooks/setup.md", "/book").as_posix()
    '/book/book/executed/setup.ipynb'
    """
    return Path(root) / EXECUTED_DIR / (Path(source).stem + ".ipynb")


def _inject(nb: Any, parameters: Mapping[str, Any]) -> Any:
    """Papermill's injected-parameters cell, written with Python literals.

    Papermill would turn a tuple into a string; ``repr`` keeps every value a
    literal of its own type.  The cell stays visible in the executed page, so
    the reader sees the parameters actually used.
    """
    from papermill.parameterize import parameterize_notebook

    jsonable = {k: list(v) if isinstance(v, tuple) else v for k, v in parameters.items()}
    nb = parameterize_notebook(nb, jsonable, kernel_name="python3", language="python")
    for cell in nb.cells:
        if "injected-parameters" in cell.metadata.get("tags", []):
            lines = ["# Parameters passed by gentwin (papermill); they replace the defaults above"]
            lines += [f"{k} = {v!r}" for k, v in parameters.items()]
            cell.source = "\n".join(lines)
            cell.metadata.pop("jupyter", None)  # never hidden
    return nb


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.name


def execute(
    path: str | os.PathLike,
    output_path: str | os.PathLike,
    parameters: Mapping[str, Any] | None = None,
    cwd: str | os.PathLike | None = None,
    *,
    timeout: int | None = None,
) -> Path:
    """Execute a jupytext notebook through papermill into ``output_path``.

    The notebook runs in ``cwd`` (the book's root) with the ``python3``
    kernel.  The result is written to a temporary file beside
    ``output_path`` and moved into place only when every cell succeeded, so a
    failing run leaves the previous output byte-for-byte as it was.

    Parameters are injected as papermill does (a visible cell tagged
    ``injected-parameters`` after the ``parameters`` cell); call
    :func:`check_parameters` first.  No environment variables are recorded.

    Raises
    ------
    ExecutionError
        When a cell raises; the message carries that cell's error.
    """
    import jupytext
    import nbformat
    import papermill
    from papermill.exceptions import PapermillExecutionError

    path, output_path = Path(path), Path(output_path)
    root = Path(cwd) if cwd is not None else Path.cwd()
    nb = jupytext.read(path)
    nb.metadata["papermill"] = {
        "default_parameters": {}, "parameters": {}, "environment_variables": {}, "version": papermill.__version__,
    }
    for cell in nb.cells:  # papermill expects every cell to have a tags list
        cell.metadata.setdefault("tags", [])
    if parameters:
        nb = _inject(nb, parameters)
    try:
        done = papermill.execute_notebook(
            nb, None, parameters=None, kernel_name="python3", cwd=str(root),
            progress_bar=False, log_output=False, execution_timeout=timeout,
        )
    except PapermillExecutionError as exc:
        message = _ANSI.sub("", str(exc)).strip()
        raise ExecutionError(f"{path}: a cell failed; {output_path} was left unchanged.\n{message}") from None
    except Exception as exc:  # the kernel died, timed out, or could not start
        raise ExecutionError(
            f"{path}: execution failed ({type(exc).__name__}: {exc}); {output_path} was left unchanged"
        ) from None
    meta = done.metadata.setdefault("papermill", {})
    meta["input_path"] = _relative(path, root)
    meta["output_path"] = _relative(output_path, root)
    meta["parameters"] = {k: list(v) if isinstance(v, tuple) else v for k, v in (parameters or {}).items()}
    meta["environment_variables"] = {}
    output_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{output_path.stem}.", suffix=".ipynb.tmp", dir=output_path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(nbformat.writes(done))
        os.replace(tmp, output_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return output_path


# ---------------------------------------------------------------------------
# The book
# ---------------------------------------------------------------------------


def find_root(start: str | os.PathLike | None = None) -> Path:
    """The nearest folder at or above ``start`` (default: the current one) holding ``_toc.yml``."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "_toc.yml").is_file():
            return folder
    raise NotebookError(f"no _toc.yml in {here} or any folder above it; pass --root DIR (the book's root)")


def _toc_files(entry: Any) -> list[str]:
    """Every ``file:`` of a TOC entry, depth first, in order."""
    out: list[str] = []
    if isinstance(entry, dict):
        if "file" in entry:
            out.append(str(entry["file"]))
        for key in ("parts", "chapters", "sections"):
            for child in entry.get(key, []) or []:
                out.extend(_toc_files(child))
    elif isinstance(entry, list):
        for child in entry:
            out.extend(_toc_files(child))
    return out


def toc_notebooks(root: str | os.PathLike) -> list[Path]:
    """The notebook sources of the book, in table-of-contents order.

    Each TOC entry ``book/executed/NAME`` is produced from ``notebooks/NAME.md``;
    static pages (``book/intro`` and the like) are not notebooks and are
    skipped.  A missing source is an error naming the entry.
    """
    import yaml

    root = Path(root)
    toc_path = root / "_toc.yml"
    if not toc_path.is_file():
        raise NotebookError(f"{toc_path} does not exist")
    try:
        toc = yaml.safe_load(toc_path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise NotebookError(f"{toc_path}: not valid YAML ({exc})") from None
    if not isinstance(toc, dict):
        raise NotebookError(f"{toc_path}: expected a mapping with `root` and `parts` or `chapters`")
    files = ([str(toc["root"])] if "root" in toc else []) + _toc_files(toc)
    prefix = EXECUTED_DIR.as_posix() + "/"
    sources, missing = [], []
    for entry in files:
        entry = entry.removesuffix(".ipynb").removesuffix(".md")
        if not entry.startswith(prefix):
            continue
        src = root / SOURCE_DIR / (entry[len(prefix):] + ".md")
        (sources if src.is_file() else missing).append(src)
    if missing:
        raise NotebookError(
            f"{toc_path} lists executed notebooks whose sources do not exist: "
            + ", ".join(_relative(p, root) for p in missing)
        )
    return sources


def _jupyter_book_command() -> list[str]:
    script = Path(sys.executable).parent / "jupyter-book"
    if script.is_file():
        return [str(script)]
    found = shutil.which("jupyter-book")
    if found:
        return [found]
    return [sys.executable, "-c", "import sys; from jupyter_book.cli.main import main; sys.exit(main())"]


def build_book(
    root: str | os.PathLike,
    profile: str = "paper",
    *,
    log: Callable[[str], None] | None = None,
    build: bool = True,
    execute_notebooks: bool = True,
) -> Path:
    """Execute every notebook of the TOC with ``profile``, then build the HTML book.

    Every notebook is checked first (so a bad profile or a broken parameters
    cell stops before anything runs), then executed in TOC order into
    ``root/book/executed/NAME.ipynb``; the first failing cell stops the run
    with that cell's error.  The book is built with
    ``jupyter-book build ROOT -W -n --keep-going``: any warning fails it.

    Parameters
    ----------
    root : path-like
        The book's root (holding ``_toc.yml`` and ``_config.yml``).
    profile : {"paper", "quick"}
        Passed to every notebook as ``profile``.
    log : callable, optional
        Receives one line per step (which notebook runs, how long it took).
    build : bool
        ``False`` runs the notebooks only.
    execute_notebooks : bool
        ``False`` builds from the pages already executed (e.g. one re-run with
        ``gentwin run``); a missing page then fails the build.

    Returns
    -------
    Path
        ``root/_build/html/index.html``.
    """
    root = Path(root)
    say = log or (lambda line: print(line, file=sys.stderr, flush=True))
    if profile not in config.PROFILES:
        raise ParameterError(f"profile = {profile!r}: must be one of {', '.join(map(repr, config.PROFILES))}")
    sources = toc_notebooks(root)
    plan = [(src, check_parameters(src, {"profile": profile})) for src in sources]
    if not execute_notebooks:
        plan = []
    start = time.perf_counter()
    for k, (src, params) in enumerate(plan, 1):
        out = output_path_for(src, root)
        say(f"[{k}/{len(plan)}] running {_relative(src, root)} (profile={profile}) ...")
        t0 = time.perf_counter()
        execute(src, out, params, cwd=root)
        say(f"[{k}/{len(plan)}] wrote {_relative(out, root)} in {time.perf_counter() - t0:.1f} s")
    say(f"executed {len(plan)} notebooks in {time.perf_counter() - start:.1f} s")
    index = root / "_build" / "html" / "index.html"
    if not build:
        return index
    cmd = [*_jupyter_book_command(), "build", str(root), "-W", "-n", "--keep-going"]
    say("building the book: " + " ".join(cmd[-5:]))
    t0 = time.perf_counter()
    result = subprocess.run(cmd, cwd=root)
    if result.returncode != 0:
        raise NotebookError(
            f"jupyter-book build failed (exit code {result.returncode}); warnings count as errors, see above"
        )
    say(f"built the book in {time.perf_counter() - t0:.1f} s")
    return index
