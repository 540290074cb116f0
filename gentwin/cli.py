"""The ``gentwin`` command: run one chapter with new parameters, or build the whole book.

Examples
--------
::

    gentwin run notebooks/setup.md -p n_sensors 30
    gentwin run notebooks/setup.md -p profile quick -p n_services 2
    gentwin params notebooks/setup.md
    gentwin book --profile quick
    gentwin diff-glue old/book/executed book/executed --ignore '_ms'

Exit codes: 0 on success, 2 when the command line, a chapter or a parameter
is rejected (nothing ran, nothing changed), 1 when a notebook cell or the book
build failed (the previous outputs of the failing notebook are untouched) or
when ``diff-glue`` found a difference.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from . import config
from .notebook import (NotebookError, ParameterError, build_book, check_parameters, diff_glued, execute, find_root,
                       output_path_for, read_parameters)

__all__ = ["main", "make_parser"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

_PROG_HELP = """\
Re-run the GenTwin reproduction (Duran et al., IEEE TCCN 2025).

Each chapter of the book is a notebook, notebooks/NAME.md, whose parameters
are gentwin.config fields.  `gentwin run` executes one chapter (with -p
NAME VALUE overrides, checked before anything runs) into
book/executed/NAME.ipynb, the page the book shows; `gentwin book` runs every
chapter and builds the HTML book.
"""

_PROG_EPILOG = """\
examples:
  gentwin run notebooks/setup.md -p n_sensors 30   re-run the data-set chapter with 30 sensors
  gentwin params notebooks/setup.md                what can be changed, ranges and defaults
  gentwin book --profile quick                     every chapter, small and fast, then the HTML book
  gentwin diff-glue OLD_DIR NEW_DIR                 the glued values two executed books disagree on

Pages, trainings and frozen passes whose inputs (source, parameters, code,
library versions) did not change are reused from a checksum-verified cache
($GENTWIN_CACHE, else ~/.cache/gentwin); --no-cache computes everything.

exit codes: 0 success; 2 rejected command line, chapter or parameter (nothing
changed); 1 a notebook cell or the book build failed (previous outputs kept),
or diff-glue found a difference.
"""

_RUN_HELP = """\
Execute one notebook through papermill into ROOT/book/executed/NAME.ipynb.

Every -p NAME VALUE is checked against the notebook's parameters cell and
against gentwin.config (type and documented range) before anything runs; a
rejected value stops with a message naming it and leaves every existing output
as it was.  The output is written only once every cell succeeded (a failed,
interrupted or killed run leaves the previous page and no temporary file).  The
executed page shows the parameters that were used.  The terminal shows each
cell as it starts ("[setup] cell 3/9: ...") and the chapter's progress bars.

Sizes have upper bounds (about 100x the paper's values; `gentwin params`
shows them), and parameters are checked together with the generator's rules
(e.g. a split that would get no node), so a run that cannot succeed, or would
exhaust the memory, stops before it starts.
"""

_RUN_EPILOG = """\
examples:
  gentwin run notebooks/setup.md
  gentwin run notebooks/setup.md -p n_sensors 30
  gentwin run notebooks/setup.md -p profile quick -p n_services 2 -p data_seed 7
  gentwin run notebooks/setup.md --root /path/to/checkout

Values are written as on the command line: 30, 0.08, true, paper; lists as
0.2,0.6.  `gentwin params NOTEBOOK` lists the names, types and ranges.
"""

_BOOK_HELP = """\
Run every notebook of _toc.yml in order with the chosen profile, then build the
HTML book with `jupyter-book build ROOT -W -n --keep-going` (any warning fails
the build).  Prints the path of index.html.
"""

_BOOK_EPILOG = """\
examples:
  gentwin book                   the paper's parameters (slow: trains the adapters)
  gentwin book --profile quick   small and fast (what CI builds)
"""

_PARAMS_HELP = """\
List the parameters a notebook takes: type, allowed range, the default of each
profile, the paper's value where the paper gives one, and what it means.
"""

_PARAMS_EPILOG = """\
example:
  gentwin params notebooks/setup.md
"""

_DIFF_HELP = """\
Compare the values two folders of executed notebooks glued (myst_nb.glue), by
the text each page shows.  Prints one line per differing name: name, old value,
new value (a name glued on one side only shows "(absent)" on the other).
Exits 0 when every value is the same, 1 when some differ.
"""

_DIFF_EPILOG = """\
example:
  gentwin diff-glue /tmp/before/book/executed book/executed --ignore '_ms$|_seconds$'
"""


_NO_CACHE_HELP = ("compute every page and step again, reading and writing no cache entry (default: reuse the "
                  "pages and the trainings/frozen passes whose inputs did not change, kept in $GENTWIN_CACHE, "
                  "else ~/.cache/gentwin)")


def _step_cache(no_cache: bool):
    """The cache of this run; ``--no-cache`` also turns it off in the notebooks' kernels (they inherit it)."""
    from . import cache

    if no_cache:
        os.environ[cache.ENV_OFF] = "1"
    return cache.from_environment(log=_say)


def make_parser() -> argparse.ArgumentParser:
    """The argument parser of ``gentwin`` (its help texts are the user documentation)."""
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="gentwin", description=_PROG_HELP, epilog=_PROG_EPILOG, formatter_class=raw)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")

    run = sub.add_parser("run", help="execute one notebook with checked parameters", description=_RUN_HELP,
                         epilog=_RUN_EPILOG, formatter_class=raw)
    run.add_argument("notebook", metavar="NOTEBOOK", help="the jupytext source, e.g. notebooks/setup.md")
    run.add_argument(
        "-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"), default=[],
        help="set a parameter (repeatable); VALUE may start with '-', e.g. -p n_sensors -5 is read and rejected",
    )
    run.add_argument("--root", metavar="DIR", help="the book's root, holding _toc.yml (default: found from here up)")
    run.add_argument("--no-cache", action="store_true", help=_NO_CACHE_HELP)

    book = sub.add_parser("book", help="run every notebook, then build the HTML book", description=_BOOK_HELP,
                          epilog=_BOOK_EPILOG, formatter_class=raw)
    book.add_argument("--profile", choices=sorted(config.PROFILES), default="paper",
                      help="parameter profile passed to every notebook (default: paper)")
    book.add_argument("--root", metavar="DIR", help="the book's root, holding _toc.yml (default: found from here up)")
    book.add_argument("--no-build", action="store_true", help="run the notebooks only, skip jupyter-book")
    book.add_argument("--no-execute", action="store_true",
                      help="build from the pages already executed (keeps a page re-run with `gentwin run`)")
    book.add_argument("--no-cache", action="store_true", help=_NO_CACHE_HELP)

    params = sub.add_parser("params", help="list a notebook's parameters, ranges and defaults",
                            description=_PARAMS_HELP, epilog=_PARAMS_EPILOG, formatter_class=raw)
    params.add_argument("notebook", metavar="NOTEBOOK", help="the jupytext source, e.g. notebooks/setup.md")
    params.add_argument("--root", metavar="DIR", help="the book's root (default: found from here up)")

    diff = sub.add_parser("diff-glue", help="list the glued values two executed books disagree on",
                          description=_DIFF_HELP, epilog=_DIFF_EPILOG, formatter_class=raw)
    diff.add_argument("old", metavar="OLD_DIR", help="folder of executed notebooks, e.g. a saved book/executed")
    diff.add_argument("new", metavar="NEW_DIR", help="folder of executed notebooks to compare with OLD_DIR")
    diff.add_argument("--ignore", metavar="REGEX",
                      help="skip names this regular expression matches (re.search), e.g. wall-clock times")
    return parser


_OPTIONS = frozenset({"-p", "--param", "--root", "-h", "--help", "--profile", "--no-build", "--no-execute",
                      "--ignore", "--no-cache"})


def _take_params(argv: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Pull ``-p NAME VALUE`` pairs out of ``argv`` before argparse sees them.

    argparse would read a VALUE such as ``-inf`` or ``-1e-3`` as an option; the
    value must reach the range check instead, so the pairs are taken literally.
    """
    rest: list[str] = []
    pairs: list[tuple[str, str]] = []
    k = 0
    while k < len(argv):
        tok = argv[k]
        if tok in ("-p", "--param"):
            # a VALUE may start with "-" (it is range-checked later), but an option name is no value
            if k + 2 >= len(argv) or argv[k + 2] in _OPTIONS or argv[k + 1] in _OPTIONS:
                raise ParameterError(f"{tok} needs a NAME and a VALUE, e.g. {tok} n_sensors 30")
            pairs.append((argv[k + 1], argv[k + 2]))
            k += 3
            continue
        if tok == "--":
            rest.extend(argv[k:])
            break
        rest.append(tok)
        k += 1
    return rest, pairs


def _root(arg: str | None) -> Path:
    if arg is None:
        return find_root()
    root = Path(arg)
    if not (root / "_toc.yml").is_file():
        raise ParameterError(f"--root = {arg!r}: no _toc.yml there")
    return root.resolve()


def _notebook(arg: str, root: Path) -> Path:
    """A relative NOTEBOOK is looked up in the book's root first, then in the current folder."""
    path = Path(arg)
    for candidate in (root / path, path):
        if candidate.is_file():
            found = candidate.resolve()
            try:  # shorter in messages when it lies below the current folder
                return found.relative_to(Path.cwd().resolve())
            except ValueError:
                return found
    raise ParameterError(f"NOTEBOOK = {arg!r}: no such file (looked in {root} and {Path.cwd()})")


def _show(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _cmd_run(args: argparse.Namespace, pairs: list[tuple[str, str]]) -> int:
    root = _root(args.root)
    src = _notebook(args.notebook, root)
    seen: set[str] = set()
    for name, _ in pairs:
        if name in seen:
            raise ParameterError(f"parameter {name!r} is given twice")
        seen.add(name)
    params = check_parameters(src, dict(pairs))
    out = output_path_for(src, root)
    used = ", ".join(f"{k}={v!r}" for k, v in params.items()) or "the notebook's defaults"
    print(f"running {_show(src, root)} with {used} ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    execute(src, out, params, cwd=root, log=_say, step_cache=_step_cache(args.no_cache))
    print(f"wrote {out} ({time.perf_counter() - t0:.1f} s)")
    return EXIT_OK


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _cmd_diff(args: argparse.Namespace) -> int:
    differences = diff_glued(args.old, args.new, args.ignore)
    for name, old, new in differences:
        print(f"{name}: {'(absent)' if old is None else old} -> {'(absent)' if new is None else new}")
    if differences:
        print(f"{len(differences)} glued values differ", file=sys.stderr)
        return EXIT_FAILED
    print("every glued value is the same", file=sys.stderr)
    return EXIT_OK


def _cmd_book(args: argparse.Namespace) -> int:
    root = _root(args.root)
    index = build_book(root, args.profile, log=_say, build=not args.no_build,
                       execute_notebooks=not args.no_execute, step_cache=_step_cache(args.no_cache))
    if args.no_build:
        print(f"executed every notebook of {root / '_toc.yml'}")
    else:
        print(f"the book is at {index}")
    return EXIT_OK


def _type_name(typ: Any) -> str:
    name = getattr(typ, "__name__", None)
    if name == "tuple":
        args = getattr(typ, "__args__", ())
        return f"list of {getattr(args[0], '__name__', args[0])}" if args else "list"
    return name or str(typ)


def _cmd_params(args: argparse.Namespace) -> int:
    root = _root(args.root) if args.root else None
    src = _notebook(args.notebook, root or Path.cwd())
    declared = read_parameters(src)
    profiles = sorted(config.PROFILES)
    lines = [f"{_show(src, root) if root else args.notebook} takes these parameters (gentwin run NOTEBOOK -p NAME VALUE):", ""]
    for name, (default, comment) in declared.items():
        if name == "profile":
            lines.append(f"  profile  (str; one of {', '.join(map(repr, profiles))}; notebook default {default!r})")
            lines.append(f"      {comment or 'where the defaults of the other parameters come from'}")
            continue
        spec = config.field_spec(name)
        values = {p: getattr(getattr(config.PROFILES[p], spec.section), name) for p in profiles}
        defaults = ", ".join(f"{p} {','.join(map(str, v)) if isinstance(v, tuple) else v}" for p, v in values.items())
        head = f"  {name}  ({_type_name(spec.type)}; {spec.describe_range()}; profile defaults: {defaults}"
        if spec.paper:
            head += f"; the paper's value: {spec.paper}"
        if default is not None:
            head += f"; notebook default {default!r}"
        lines.append(head + ")")
        lines.append(f"      {spec.help}")
    print("\n".join(lines))
    return EXIT_OK


def _terminated(signum: int, frame: Any) -> None:
    # SIGTERM unwinds like an exception, so temporary files and the kernel are cleaned up on the way out
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``gentwin`` and ``python -m gentwin``; returns the exit code."""
    try:
        previous = signal.signal(signal.SIGTERM, _terminated)
    except ValueError:  # not the main thread: leave signals alone
        previous = None
    try:
        return _main(argv)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = make_parser()
    try:
        rest, pairs = _take_params(argv)
    except ParameterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    args = parser.parse_args(rest)  # exits with 2 on a usage error
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    if pairs and args.command != "run":
        print("error: -p NAME VALUE belongs to `gentwin run`", file=sys.stderr)
        return EXIT_USAGE
    try:
        if args.command == "run":
            return _cmd_run(args, pairs)
        if args.command == "book":
            return _cmd_book(args)
        if args.command == "diff-glue":
            return _cmd_diff(args)
        return _cmd_params(args)
    except ParameterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except NotebookError as exc:  # a cell, the TOC or the book build failed
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("error: interrupted; outputs of the interrupted notebook were left unchanged", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
