"""The notebook runner: checked parameters, atomic execution of a chapter, the book build and glue diffs.

A chapter is a jupytext MyST notebook ``notebooks/NAME.md`` whose ``parameters`` cell holds only assignments
such as ``n_sensors = None  # from the profile``.  Errors are :class:`ParameterError` (nothing ran, nothing
changed), :class:`ExecutionError` (a cell raised; the previous output is untouched) and :class:`NotebookError`.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from . import config
from .checks import check_choice
from .files import atomic_write_bytes, atomic_write_text
from .provenance import EXECUTED_DIR, SOURCE_DIR

__all__ = [
    "NotebookError", "ParameterError", "ExecutionError", "EXECUTED_DIR", "parse_parameters_source", "read_parameters",
    "check_parameters", "output_path_for", "page_inputs", "execute", "toc_notebooks", "build_book", "find_root",
    "diff_glued",
]

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class NotebookError(Exception):
    """A notebook, the table of contents or the book build is not usable."""


class ParameterError(NotebookError, ValueError):
    """A chapter, its parameters cell or a ``-p NAME VALUE`` override was rejected; nothing ran or changed."""


class ExecutionError(NotebookError, RuntimeError):
    """A cell of the notebook raised; the previous output was left untouched."""


def parse_parameters_source(source: str, where: str = "parameters cell",
                            first_line: int = 1) -> dict[str, tuple[Any, str]]:
    """Parse the source of a ``parameters`` cell into ``{name: (default, comment)}``.

    Names, defaults and comments are papermill's reading (its translator's ``inspect``); we only add strictness:
    single-name assignments of literals, each name once, else :class:`ParameterError` naming ``where`` and the
    line of the file (``first_line`` is the cell's first).

    >>> parse_parameters_source('profile = "paper"  # defaults\\nsplit = (0.7, 0.15, 0.15)')
    {'profile': ('paper', 'defaults'), 'split': ((0.7, 0.15, 0.15), '')}
    >>> parse_parameters_source("import os", where="nb.md", first_line=10)
    Traceback (most recent call last):
    ...
    gentwin.notebook.ParameterError: nb.md, line 10: the parameters cell may hold only assignments `name = value`, found Import
    """
    from papermill.translators import papermill_translators

    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        line = first_line + (exc.lineno or 1) - 1
        raise ParameterError(f"{where}, line {line}: the parameters cell is not valid Python ({exc.msg})") from None
    lines: dict[str, int] = {}
    for stmt in tree.body:
        line = first_line + stmt.lineno - 1
        if isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            targets = [stmt.target]
        else:
            targets = stmt.targets if isinstance(stmt, ast.Assign) else []
        if len(targets) != 1 or not isinstance(targets[0], ast.Name):
            raise ParameterError(f"{where}, line {line}: the parameters cell may hold only assignments "
                                 f"`name = value`, found {type(stmt).__name__}")
        if targets[0].id in lines:
            raise ParameterError(f"{where}, line {line}: parameter {targets[0].id!r} is assigned twice")
        lines[targets[0].id] = line
    inspected = papermill_translators.find_translator("python3", "python").inspect({"source": source})
    if [p.name for p in inspected] != list(lines):
        read = ", ".join(p.name for p in inspected) or "none"
        raise ParameterError(f"{where}: papermill reads the parameters {read} but the cell assigns "
                             f"{', '.join(lines)}; write one `name = value  # comment` per line")
    out: dict[str, tuple[Any, str]] = {}
    for param in inspected:
        try:
            out[param.name] = (ast.literal_eval(param.default), param.help)
        except (ValueError, SyntaxError):
            raise ParameterError(f"{where}, line {lines[param.name]}: {param.name} = {param.default}: the value must "
                                 "be a literal (a number, string, True/False, None or a tuple of those)") from None
    return out


def read_parameters(path: str | os.PathLike) -> dict[str, tuple[Any, str]]:
    """The parameters of a chapter's cell tagged ``parameters`` (read, not run): ``{name: (default, comment)}``."""
    import jupytext

    path = Path(path)
    if not path.is_file():
        raise ParameterError(f"notebook {str(path)!r} does not exist")
    if path.suffix != ".md":
        raise ParameterError(f"{path}: not a chapter (a chapter is a jupytext notebook notebooks/NAME.md)")
    try:
        nb = jupytext.read(path)
    except Exception as exc:  # jupytext raises many kinds
        raise ParameterError(f"{path}: cannot be read as a jupytext notebook ({exc})") from None
    found = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(found) != 1:
        raise ParameterError(f"{path}: no cell is tagged `parameters` (a chapter is notebooks/NAME.md with one)"
                             if not found else f"{path}: {len(found)} cells are tagged `parameters`; there must be "
                             "exactly one")
    source, text = found[0].source, path.read_text(encoding="utf-8")
    pos = text.find(source) if source else -1
    first_line = text.count("\n", 0, pos) + 1 if pos >= 0 else 1
    return parse_parameters_source(source, where=str(path), first_line=first_line)


def check_parameters(path: str | os.PathLike, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Check ``-p NAME VALUE`` overrides (strings are :func:`gentwin.config.coerce`-d) before anything runs.

    Returns them typed.  :class:`ParameterError` names the parameter and value for a name the notebook does
    not take, an unknown profile, a bad value or values that do not fit together (:func:`gentwin.config.resolve`),
    and a parameters cell declaring a name that is no :mod:`gentwin.config` field.
    """
    path = Path(path)
    declared = read_parameters(path)
    known = set(config.field_names())
    strays = [n for n in declared if n != "profile" and n not in known]
    if strays:
        which = "is not a gentwin.config field" if len(strays) == 1 else "are not gentwin.config fields"
        raise ParameterError(f"{path}: the parameters cell declares {', '.join(strays)}, which {which} "
                             "(every notebook parameter must be one, so it can be checked)")
    typed: dict[str, Any] = {}
    try:
        for name, value in overrides.items():
            if name not in declared:
                extra = " (it is a gentwin.config parameter, but this notebook does not use it)" * (name in known)
                raise ParameterError(f"unknown parameter {name!r} = {value!r} for {path}{extra}; "
                                     f"known parameters: {', '.join(declared)}")
            if name == "profile":
                typed[name] = check_choice("profile", value, config.PROFILES, error=ParameterError)
            else:
                typed[name] = config.coerce(name, value) if isinstance(value, str) else value
        profile = typed.get("profile", declared.get("profile", ("paper", ""))[0])
        values = {n: d for n, (d, _) in declared.items() if n != "profile"}
        config.resolve(profile, **{**values, **{n: v for n, v in typed.items() if n != "profile"}})
    except config.ConfigError as exc:
        raise ParameterError(str(exc)) from None
    return typed


def output_path_for(source: str | os.PathLike, root: str | os.PathLike) -> Path:
    """Where ``gentwin run`` writes a notebook: ``root/book/executed/NAME.ipynb``.

    >>> output_path_for("notebooks/setup.md", "/book").as_posix()
    '/book/book/executed/setup.ipynb'
    """
    return Path(root) / EXECUTED_DIR / (Path(source).stem + ".ipynb")


def _jsonable(parameters: Mapping[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in parameters.items()}


def _inject(nb: Any, parameters: Mapping[str, Any]) -> Any:
    """Papermill's injected-parameters cell, written with ``repr`` (papermill would make a tuple a string), folded."""
    from papermill.parameterize import parameterize_notebook

    nb = parameterize_notebook(nb, _jsonable(parameters), kernel_name="python3", language="python")
    for cell in nb.cells:
        if "injected-parameters" in cell.metadata.get("tags", []):
            lines = ["# Parameters passed by gentwin (papermill); they replace the defaults above"]
            cell.source = "\n".join(lines + [f"{k} = {v!r}" for k, v in parameters.items()])
            cell.metadata.pop("jupyter", None)
            cell.metadata["tags"] = [*cell.metadata.get("tags", []), "hide-input"]
    return nb


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.name


def _ipc_kernel_manager(folder: Path, started: list[Any]) -> type:
    """A kernel manager over IPC sockets in ``folder`` (over TCP the kernel warns of unencrypted traffic); each
    manager is appended to ``started`` so that a terminated run can stop its kernel at once."""
    from jupyter_client.manager import KernelManager

    class IPCKernelManager(KernelManager):
        def __init__(self, **kwargs: Any) -> None:
            kwargs.setdefault("transport", "ipc")
            kwargs.setdefault("ip", str(folder / "kernel"))
            super().__init__(**kwargs)
            started.append(self)

        def start_kernel(self, **kw: Any) -> Any:
            # huggingface_hub imports tqdm.auto, which without ipywidgets warns "IProgress not found" onto
            # the page although none of its bars is shown; the page's own bars go to the terminal
            env = dict(kw.pop("env", None) or os.environ)
            env["PYTHONWARNINGS"] = ",".join(filter(None, [env.get("PYTHONWARNINGS"), "ignore:IProgress not found"]))
            return super().start_kernel(env=env, **kw)

    return IPCKernelManager


def _stop_now(managers: list[Any], sockets: Path, say: Callable[[str], None] | None) -> Callable[..., Any]:
    """A SIGTERM handler for a run in progress: kill its kernel, remove its files, exit ``128 + signum``
    (``SystemExit`` would hang in nbclient's blocking poll for the cell's reply)."""
    def on_sigterm(signum: int, frame: Any) -> None:
        for km in managers:
            process = getattr(getattr(km, "provisioner", None), "process", None)
            if process is not None and process.poll() is None:
                process.kill()
            if getattr(km, "connection_file", ""):
                Path(km.connection_file).unlink(missing_ok=True)
        shutil.rmtree(sockets, ignore_errors=True)
        if say is not None:
            say("terminated: the kernel was stopped and the previous page left unchanged")
        os._exit(128 + signum)

    return on_sigterm


def _cell_reporter(nb: Any, name: str, say: Callable[[str], None] | None,
                   on_sigterm: Callable[..., Any] | None) -> Callable[..., None]:
    """An nbclient ``on_cell_start`` hook saying ``[name] cell k/N: first line``; it re-installs ``on_sigterm``,
    which nbclient replaces while the notebook runs."""
    position = {k: n for n, k in enumerate((k for k, c in enumerate(nb.cells) if c.cell_type == "code"), 1)}

    def on_cell_start(cell: Any, cell_index: int, **_: Any) -> None:
        if on_sigterm is not None and signal.getsignal(signal.SIGTERM) is not on_sigterm:
            signal.signal(signal.SIGTERM, on_sigterm)
        if say is not None and cell_index in position:
            first = next((ln for ln in cell.source.splitlines() if ln.strip()), "")
            say(f"[{name}] cell {position[cell_index]}/{len(position)}: {first[:100]}")

    return on_cell_start


def _write_if_changed(path: Path, data: bytes) -> None:
    if not (path.is_file() and path.read_bytes() == data):
        atomic_write_bytes(path, data)


def _side_files(root: Path) -> dict[str, tuple[int, int]]:
    """Files beside the executed pages (not the pages nor the shared data set) with their mtime and size."""
    folder = root / EXECUTED_DIR
    out = {}
    for p in folder.rglob("*") if folder.is_dir() else ():
        rel = p.relative_to(folder)
        if p.is_file() and p.suffix != ".ipynb" and rel.parts[0] != "data" and not p.name.startswith("."):
            out[(EXECUTED_DIR / rel).as_posix()] = (p.stat().st_mtime_ns, p.stat().st_size)
    return out


def page_inputs(path: str | os.PathLike, parameters: Mapping[str, Any], root: str | os.PathLike,
                output_path: str | os.PathLike) -> dict[str, Any]:
    """What an executed page depends on beyond the library's code (which every cache key holds).

    The chapter's source, its parameters, whether a Neo4j server is named (``NEO4J_URI``, hashed) and, for a
    page that reads other pages (its source names ``book/executed``), the pages before it in the table of
    contents (all other pages when it is not in it).
    """
    from .cache import fingerprint

    path, root = Path(path), Path(root)
    source = path.read_bytes()
    inputs: dict[str, Any] = {"source": source, "parameters": dict(parameters),
                              "neo4j": fingerprint(os.environ.get("NEO4J_URI", ""))}
    if EXECUTED_DIR.as_posix().encode() in source:
        pages = sorted((root / EXECUTED_DIR).glob("*.ipynb"))
        order = [p.stem for p in toc_notebooks(root)] if (root / "_toc.yml").is_file() else []
        if path.stem in order:
            pages = [p for p in pages if p.stem in order[: order.index(path.stem)]]
        inputs["reads"] = {p.name: p.read_bytes() for p in pages if p.resolve() != Path(output_path).resolve()}
    return inputs


def execute(path: str | os.PathLike, output_path: str | os.PathLike, parameters: Mapping[str, Any] | None = None,
            cwd: str | os.PathLike | None = None, *, timeout: int | None = None,
            log: Callable[[str], None] | None = None, step_cache: Any = None) -> Path:
    """Execute a jupytext notebook through papermill in ``cwd`` (the book's root) into ``output_path``.

    The result is written atomically once the last cell finished, so a failing or killed run leaves the
    previous output as it was.  Parameters (checked by :func:`check_parameters`) are injected as papermill does;
    ``log`` receives ``[NAME] cell k/N: first line`` as each code cell starts; :class:`ExecutionError` carries
    a failing cell's error.  With ``step_cache`` (:class:`gentwin.cache.StepCache`) the page and the files it
    wrote beside itself are kept under :func:`page_inputs`, and a later run with the same inputs writes them
    back without executing (an unchanged page is not rewritten, so Sphinx does not rebuild it).
    """
    root = Path(cwd) if cwd is not None else Path.cwd()
    if step_cache is None or step_cache.folder is None:
        return _execute(Path(path), Path(output_path), parameters or {}, root, timeout, log)
    key = step_cache.key("page", page_inputs(path, parameters or {}, root, output_path))
    found, entry = step_cache.load("page", key)
    if found:
        for rel, data in entry["files"].items():
            _write_if_changed(root / rel, data)
        _write_if_changed(Path(output_path), entry["notebook"])
        if log is not None:
            log(f"[{Path(path).stem}] reused from the cache: same source, parameters and code ({key[:12]})")
        return Path(output_path)
    before = _side_files(root)
    _execute(Path(path), Path(output_path), parameters or {}, root, timeout, log)
    files = {rel: (root / rel).read_bytes() for rel, stamp in _side_files(root).items() if before.get(rel) != stamp}
    step_cache.store("page", key, {"notebook": Path(output_path).read_bytes(), "files": files}, note=Path(path).stem)
    return Path(output_path)


def _execute(path: Path, output_path: Path, parameters: Mapping[str, Any], root: Path, timeout: int | None,
             log: Callable[[str], None] | None) -> Path:
    import jupytext
    import nbformat
    import papermill
    from papermill.exceptions import PapermillExecutionError

    nb = jupytext.read(path)
    nb.metadata["papermill"] = {"default_parameters": {}, "parameters": {}, "environment_variables": {},
                                "version": papermill.__version__}
    for cell in nb.cells:  # papermill expects every cell to have a tags list
        cell.metadata.setdefault("tags", [])
    if parameters:
        nb = _inject(nb, parameters)
    managers: list[Any] = []
    caller = signal.getsignal(signal.SIGTERM)  # a Python handler (the CLI's) asks for a clean stop
    try:
        with tempfile.TemporaryDirectory(prefix="gentwin-kernel-") as sockets:
            in_main = threading.current_thread() is threading.main_thread()  # signals are the main thread's
            on_sigterm = _stop_now(managers, Path(sockets), log) if callable(caller) and in_main else None
            done = papermill.execute_notebook(
                nb, None, parameters=None, kernel_name="python3", cwd=str(root), progress_bar=False,
                log_output=False, execution_timeout=timeout,
                # ipykernel forwards what the kernel process writes to its stderr into the running cell;
                # with that off, the page's progress bars (gentwin.progress) reach the terminal only
                extra_arguments=["--IPKernelApp.capture_fd_output=False"],
                on_cell_start=_cell_reporter(nb, path.stem, log, on_sigterm),
                kernel_manager_class=_ipc_kernel_manager(Path(sockets), managers))
    except PapermillExecutionError as exc:
        message = _ANSI.sub("", str(exc)).strip()
        raise ExecutionError(f"{path}: a cell failed; {output_path} was left unchanged.\n{message}") from None
    except Exception as exc:  # the kernel died, timed out, or could not start
        raise ExecutionError(f"{path}: execution failed ({type(exc).__name__}: {exc}); {output_path} was left "
                             "unchanged") from None
    finally:
        if callable(caller):  # nbclient resets SIGTERM to the default when it finishes
            signal.signal(signal.SIGTERM, caller)
    done.metadata.setdefault("papermill", {}).update(
        input_path=_relative(path, root), output_path=_relative(output_path, root),
        parameters=_jsonable(parameters), environment_variables={})
    atomic_write_text(output_path, nbformat.writes(done))
    return output_path


def find_root(start: str | os.PathLike | None = None) -> Path:
    """The nearest folder at or above ``start`` (default: the current one) holding ``_toc.yml``."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "_toc.yml").is_file():
            return folder
    raise NotebookError(f"no _toc.yml in {here} or any folder above it; pass --root DIR (the book's root)")


def toc_notebooks(root: str | os.PathLike) -> list[Path]:
    """The sources ``notebooks/NAME.md`` of the entries ``book/executed/NAME`` of ``_toc.yml``, in its order
    (read with sphinx-external-toc); a missing source is an error."""
    import yaml
    from sphinx_external_toc.parsing import MalformedError, parse_toc_yaml

    root = Path(root)
    toc_path = root / "_toc.yml"
    if not toc_path.is_file():
        raise NotebookError(f"{toc_path} does not exist")
    try:
        site = parse_toc_yaml(toc_path)  # its documents in depth-first order, as the parser inserts them
    except yaml.YAMLError as exc:
        raise NotebookError(f"{toc_path}: not valid YAML ({exc})") from None
    except MalformedError as exc:
        raise NotebookError(f"{toc_path}: not a Jupyter Book table of contents ({exc})") from None
    prefix = EXECUTED_DIR.as_posix() + "/"
    sources = [root / SOURCE_DIR / (entry.removesuffix(".ipynb").removesuffix(".md")[len(prefix):] + ".md")
               for entry in site if entry.startswith(prefix)]
    missing = [_relative(p, root) for p in sources if not p.is_file()]
    if missing:
        raise NotebookError(f"{toc_path} lists executed notebooks whose sources do not exist: {', '.join(missing)}")
    return sources


def build_book(root: str | os.PathLike, profile: str = "paper", *, log: Callable[[str], None] | None = None,
               build: bool = True, execute_notebooks: bool = True, step_cache: Any = None) -> Path:
    """Check every notebook of the TOC, execute them in order with ``profile``, then build the HTML book.

    Pages go to ``root/book/executed/NAME.ipynb`` (the first failing cell stops the run); the book is built
    with ``jupyter-book build ROOT -W -n --keep-going``.  ``build=False`` runs the notebooks only,
    ``execute_notebooks=False`` builds from the pages already executed; with ``step_cache`` a page whose
    inputs did not change is reused (:func:`execute`).  Returns ``root/_build/html/index.html``.
    """
    root = Path(root)
    say = log or (lambda line: print(line, file=sys.stderr, flush=True))
    check_choice("profile", profile, config.PROFILES, error=ParameterError)
    plan = [(src, check_parameters(src, {"profile": profile})) for src in toc_notebooks(root)]
    start = time.perf_counter()
    for k, (src, params) in enumerate(plan if execute_notebooks else [], 1):
        out = output_path_for(src, root)
        say(f"[{k}/{len(plan)}] running {_relative(src, root)} (profile={profile}) ...")
        t0 = time.perf_counter()
        execute(src, out, params, cwd=root, log=say, step_cache=step_cache)
        say(f"[{k}/{len(plan)}] wrote {_relative(out, root)} in {time.perf_counter() - t0:.1f} s")
    say(f"executed {len(plan) if execute_notebooks else 0} notebooks in {time.perf_counter() - start:.1f} s")
    if build:
        cmd = [sys.executable, "-c", "import sys; from jupyter_book.cli.main import main; sys.exit(main())",
               "build", str(root), "-W", "-n", "--keep-going"]
        say("building the book: " + " ".join(cmd[-5:]))
        t0 = time.perf_counter()
        code = subprocess.run(cmd, cwd=root).returncode
        if code != 0:
            raise NotebookError(f"jupyter-book build failed (exit code {code}); warnings count as errors, see above")
        say(f"built the book in {time.perf_counter() - t0:.1f} s")
    return root / "_build" / "html" / "index.html"


def diff_glued(old_dir: str | os.PathLike, new_dir: str | os.PathLike,
               ignore: str | None = None) -> list[tuple[str, str | None, str | None]]:
    """``(name, old text, new text)`` of every glued value two folders of executed notebooks disagree on, by name.

    ``None`` is the side a name is not glued on; names matching the regular expression ``ignore`` are skipped.
    """
    from .audit import glued_values

    folders = {"old_dir": Path(old_dir), "new_dir": Path(new_dir)}
    for label, folder in folders.items():
        if not folder.is_dir():
            raise ParameterError(f"{label} = {str(folder)!r}: not a folder of executed notebooks")
    try:
        skip = re.compile(ignore or "(?!)")  # (?!) never matches
    except re.error as exc:
        raise ParameterError(f"ignore = {ignore!r}: not a regular expression ({exc})") from None
    old, new = ({k: v["text"] for k, v in glued_values(f).items()} for f in folders.values())
    return [(name, old.get(name), new.get(name)) for name in sorted(set(old) | set(new))
            if not skip.search(name) and old.get(name) != new.get(name)]
