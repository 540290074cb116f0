"""The ``gentwin`` command: run one chapter with new parameters, or build the whole book.

Exit codes: 0 on success, 2 when the command line, a chapter or a parameter is rejected (nothing ran, nothing
changed), 1 when a notebook cell or the book build failed (the previous outputs are untouched) or when
``diff-glue`` found a difference.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import textwrap
import time
import typing
from pathlib import Path
from typing import Any, Sequence

from . import config
from .notebook import (NotebookError, ParameterError, build_book, check_parameters, diff_glued, execute, find_root,
                       output_path_for, read_parameters)

__all__ = ["main", "make_parser"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

_EPILOG = """\
examples:
  gentwin run notebooks/setup.md -p n_sensors 30   re-run the data-set chapter with 30 sensors
  gentwin params notebooks/setup.md                what can be changed, ranges and defaults
  gentwin book --profile quick                     every chapter, small and fast, then the HTML book
  gentwin diff-glue OLD_DIR NEW_DIR                 the glued values two executed books disagree on

Pages, trainings and frozen passes whose inputs (source, parameters, code, library versions) did not change
are reused from a checksum-verified cache ($GENTWIN_CACHE, else ~/.cache/gentwin); --no-cache computes all.

exit codes: 0 success; 2 rejected command line, chapter or parameter (nothing changed); 1 a notebook cell or
the book build failed (previous outputs kept), or diff-glue found a difference.
"""

_NOTEBOOK = (("notebook",), dict(metavar="NOTEBOOK", help="the jupytext source, e.g. notebooks/setup.md"))
_ROOT = (("--root",), dict(metavar="DIR", help="the book's root, holding _toc.yml (default: found from here up)"))
_NO_CACHE = (("--no-cache",), dict(action="store_true", help="compute every page and step again, reading and "
                                   "writing no cache entry (default: reuse those whose inputs did not change)"))

#: name -> (help, description, epilog, arguments): the subcommands (their texts are the user documentation)
_COMMANDS: dict[str, tuple[str, str, str, list[tuple[tuple[str, ...], dict[str, Any]]]]] = {
    "run": (
        "execute one notebook with checked parameters",
        "Execute one notebook through papermill into ROOT/book/executed/NAME.ipynb.\n\nEvery -p NAME VALUE is "
        "checked against the notebook's parameters cell and gentwin.config (type, documented range, the data-set "
        "generator's rules) before anything runs; a rejected value stops with a message naming it.  The page is "
        "written only once every cell succeeded; the terminal shows each cell as it starts and the progress bars.",
        "examples:\n  gentwin run notebooks/setup.md -p n_sensors 30\n"
        "  gentwin run notebooks/setup.md -p profile quick -p n_services 2 --root /path/to/checkout\n\n"
        "Values are written as on the command line: 30, 0.08, true, paper; lists as 0.2,0.6.",
        [_NOTEBOOK, (("-p", "--param"), dict(nargs=2, action="append", metavar=("NAME", "VALUE"), default=[],
                                               help="set a parameter (repeatable); VALUE may start with '-'")),
         _ROOT, _NO_CACHE]),
    "book": (
        "run every notebook, then build the HTML book",
        "Run every notebook of _toc.yml in order with the chosen profile, then build the HTML book with "
        "`jupyter-book build ROOT -W -n --keep-going` (any warning fails the build).",
        "examples:\n  gentwin book                   the paper's parameters (slow: trains the adapters)\n"
        "  gentwin book --profile quick   small and fast (what CI builds)",
        [(("--profile",), dict(choices=sorted(config.PROFILES), default="paper",
                               help="parameter profile passed to every notebook (default: paper)")), _ROOT,
         (("--no-build",), dict(action="store_true", help="run the notebooks only, skip jupyter-book")),
         (("--no-execute",), dict(action="store_true", help="build from the pages already executed")), _NO_CACHE]),
    "params": (
        "list a notebook's parameters, ranges and defaults",
        "List the parameters a notebook takes: type, allowed range, the default of each profile, the paper's "
        "value where it gives one, and what it means.", "", [_NOTEBOOK, _ROOT]),
    "diff-glue": (
        "list the glued values two executed books disagree on",
        "Compare the values two folders of executed notebooks glued, by the text each page shows: one line per "
        "differing name (\"(absent)\" where it is not glued).  Exits 0 when every value is the same, 1 otherwise.", "",
        [(("old",), dict(metavar="OLD_DIR", help="folder of executed notebooks, e.g. a saved book/executed")),
         (("new",), dict(metavar="NEW_DIR", help="folder of executed notebooks to compare with OLD_DIR")),
         (("--ignore",), dict(metavar="REGEX", help="skip names this regular expression matches (re.search), "
                                                    "e.g. '_ms$|_seconds$'"))]),
}


def make_parser() -> argparse.ArgumentParser:
    """The argument parser of ``gentwin``."""
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="gentwin", description="Re-run the GenTwin reproduction (Duran et al., "
                                     "IEEE TCCN 2025):\neach chapter of the book is a notebook, notebooks/NAME.md.",
                                     epilog=_EPILOG, formatter_class=raw)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name, (short, description, epilog, arguments) in _COMMANDS.items():
        description = "\n\n".join(textwrap.fill(paragraph, 79) for paragraph in description.split("\n\n"))
        command = sub.add_parser(name, help=short, description=description, epilog=epilog, formatter_class=raw)
        for flags, options in arguments:
            command.add_argument(*flags, **options)
    return parser


_OPTIONS = frozenset(flag for *_, arguments in _COMMANDS.values() for flags, _ in arguments for flag in flags
                     if flag.startswith("-")) | {"-h", "--help"}


def _take_params(argv: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Pull ``-p NAME VALUE`` pairs out of ``argv``: argparse would read a VALUE such as ``-1e-3`` as an option."""
    rest: list[str] = []
    pairs: list[tuple[str, str]] = []
    k = 0
    while k < len(argv):
        if argv[k] == "--":
            rest.extend(argv[k:])
            break
        if argv[k] not in ("-p", "--param"):
            rest.append(argv[k])
            k += 1
            continue
        # a VALUE may start with "-" (it is range-checked later), but an option name is no value
        if k + 2 >= len(argv) or argv[k + 2] in _OPTIONS or argv[k + 1] in _OPTIONS:
            raise ParameterError(f"{argv[k]} needs a NAME and a VALUE, e.g. {argv[k]} n_sensors 30")
        pairs.append((argv[k + 1], argv[k + 2]))
        k += 3
    return rest, pairs


def _root(arg: str | None) -> Path:
    if arg is None:
        return find_root()
    if not (Path(arg) / "_toc.yml").is_file():
        raise ParameterError(f"--root = {arg!r}: no _toc.yml there")
    return Path(arg).resolve()


def _notebook(arg: str, root: Path) -> Path:
    """A relative NOTEBOOK is looked up in the book's root first, then in the current folder."""
    for candidate in (root / arg, Path(arg)):
        if candidate.is_file():
            return Path(_show(candidate.resolve(), Path.cwd().resolve()))
    raise ParameterError(f"NOTEBOOK = {arg!r}: no such file (looked in {root} and {Path.cwd()})")


def _show(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _step_cache(no_cache: bool):
    """The cache of this run; ``--no-cache`` also turns it off in the notebooks' kernels (they inherit it)."""
    from . import cache

    if no_cache:
        os.environ[cache.ENV_OFF] = "1"
    return cache.from_environment(log=_say)


def _cmd_run(args: argparse.Namespace, pairs: list[tuple[str, str]]) -> int:
    root = _root(args.root)
    src = _notebook(args.notebook, root)
    names = [name for name, _ in pairs]
    twice = next((name for k, name in enumerate(names) if name in names[:k]), None)
    if twice is not None:
        raise ParameterError(f"parameter {twice!r} is given twice")
    params = check_parameters(src, dict(pairs))
    out = output_path_for(src, root)
    used = ", ".join(f"{k}={v!r}" for k, v in params.items()) or "the notebook's defaults"
    _say(f"running {_show(src, root)} with {used} ...")
    t0 = time.perf_counter()
    execute(src, out, params, cwd=root, log=_say, step_cache=_step_cache(args.no_cache))
    print(f"wrote {out} ({time.perf_counter() - t0:.1f} s)")
    return EXIT_OK


def _cmd_book(args: argparse.Namespace) -> int:
    root = _root(args.root)
    index = build_book(root, args.profile, log=_say, build=not args.no_build,
                       execute_notebooks=not args.no_execute, step_cache=_step_cache(args.no_cache))
    print(f"executed every notebook of {root / '_toc.yml'}" if args.no_build else f"the book is at {index}")
    return EXIT_OK


def _cmd_params(args: argparse.Namespace) -> int:
    root = _root(args.root) if args.root else None
    src = _notebook(args.notebook, root or Path.cwd())
    lines = [f"{_show(src, root) if root else args.notebook} takes these parameters "
             "(gentwin run NOTEBOOK -p NAME VALUE):", ""]
    for name, (default, comment) in read_parameters(src).items():
        if name == "profile":
            lines.append(f"  profile  (str; one of {', '.join(map(repr, sorted(config.PROFILES)))}; notebook "
                         f"default {default!r})")
            lines.append(f"      {comment or 'where the defaults of the other parameters come from'}")
            continue
        spec = config.field_spec(name)
        elem = typing.get_args(spec.type)[0] if typing.get_origin(spec.type) is tuple else None
        values = {p: s.flat()[name] for p, s in sorted(config.PROFILES.items())}
        defaults = ", ".join(f"{p} {','.join(map(str, v)) if isinstance(v, tuple) else v}" for p, v in values.items())
        head = (f"  {name}  ({f'list of {elem.__name__}' if elem else spec.type.__name__}; {spec.describe_range()}; "
                f"profile defaults: {defaults}")
        head += f"; the paper's value: {spec.paper}" if spec.paper else ""
        head += f"; notebook default {default!r}" if default is not None else ""
        lines += [head + ")", f"      {spec.help}"]
    print("\n".join(lines))
    return EXIT_OK


def _cmd_diff(args: argparse.Namespace) -> int:
    differences = diff_glued(args.old, args.new, args.ignore)
    for name, old, new in differences:
        print(f"{name}: {'(absent)' if old is None else old} -> {'(absent)' if new is None else new}")
    _say(f"{len(differences)} glued values differ" if differences else "every glued value is the same")
    return EXIT_FAILED if differences else EXIT_OK


def _terminated(signum: int, frame: Any) -> None:
    # SIGTERM unwinds like an exception, so temporary files and the kernel are cleaned up on the way out
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``gentwin`` and ``python -m gentwin``; returns the exit code."""
    try:
        previous = signal.signal(signal.SIGTERM, _terminated)
    except ValueError:  # not the main thread: leave signals alone
        previous = None
    parser = make_parser()
    try:
        rest, pairs = _take_params(list(sys.argv[1:] if argv is None else argv))
        args = parser.parse_args(rest)  # exits with 2 on a usage error
        if args.command is None:
            parser.print_help()
            return EXIT_USAGE
        if pairs and args.command != "run":
            raise ParameterError("-p NAME VALUE belongs to `gentwin run`")
        commands = {"run": lambda: _cmd_run(args, pairs), "book": lambda: _cmd_book(args),
                    "params": lambda: _cmd_params(args), "diff-glue": lambda: _cmd_diff(args)}
        return commands[args.command]()
    except ParameterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except NotebookError as exc:  # a cell, the TOC or the book build failed
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("error: interrupted; outputs of the interrupted notebook were left unchanged", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
