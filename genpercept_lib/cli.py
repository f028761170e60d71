"""``genpercept reproduce | predict | toyworld``: the command line, a thin layer over the library.

Errors a user can fix (a wrong profile, a missing notebook, a bad path) print one line on stderr and exit
with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


class UserError(Exception):
    """An error caused by the command line's input: printed as one line, exit status 2."""


def _add_reproduce(sub) -> None:
    p = sub.add_parser("reproduce", help="run the numbered notebooks with papermill into results/")
    p.add_argument("--profile", default="default", help="smoke | default | paper (default: default)")
    p.add_argument("--only", default=None, help="comma-separated notebook numbers, e.g. 04 or 00,01")
    p.add_argument("--results-dir", type=Path, default=None, help="default: <repo>/results")
    p.add_argument("--notebooks-dir", type=Path, default=None, help="default: <repo>/notebooks")
    p.add_argument("--kernel", default=None, help="Jupyter kernel name (default: genpercept if registered)")


def _run_reproduce(args) -> int:
    from . import reproduce

    reproduce.run_notebooks(
        profile=args.profile, only=args.only, results_dir=args.results_dir,
        notebooks_dir=args.notebooks_dir, kernel_name=args.kernel,
    )
    return 0


def _add_toyworld(sub) -> None:
    p = sub.add_parser("toyworld", help="write a sample grid PNG of every toy-world domain and label")
    p.add_argument("-o", "--output", type=Path, default=Path("toyworld_samples.png"))
    p.add_argument("--size", type=int, default=64, help="render size in pixels (>= 16)")
    p.add_argument("--index", type=int, default=0, help="scene index per domain (>= 0)")


def _run_toyworld(args) -> int:
    from .data import toyworld

    path = toyworld.write_sample_grid(args.output, size=args.size, index=args.index)
    print(path)
    return 0


def _add_predict(sub) -> None:
    from . import predict

    p = sub.add_parser("predict", help="run a GenPercept checkpoint on images or folders of images")
    predict.add_arguments(p)


def _run_predict(args) -> int:
    from . import predict

    return predict.run(args)


COMMANDS = {
    "reproduce": (_add_reproduce, _run_reproduce),
    "toyworld": (_add_toyworld, _run_toyworld),
    "predict": (_add_predict, _run_predict),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="genpercept", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add, _ in COMMANDS.values():
        try:
            add(sub)
        except ImportError:  # a subcommand whose module is missing must not break the others
            pass
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _, run = COMMANDS[args.command]
    try:
        return run(args)
    except (UserError, ValueError, FileNotFoundError, RuntimeError) as err:
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"genpercept {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
