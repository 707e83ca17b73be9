"""The command line: `tunecell validate CONFIG`, `tunecell run --config CONFIG [--set k=v ...]`."""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from .errors import TunecellError

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="tunecell", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    validate = sub.add_parser("validate", help="check a config and print the plan it makes")
    validate.add_argument("config", help="a YAML or JSON config file (any Olive dialect)")
    validate.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one key")
    run = sub.add_parser("run", help="run a config's passes")
    run.add_argument("--config", required=True, help="a YAML or JSON config file (any Olive dialect)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one key")
    args = parser.parse_args(argv)
    return {"validate": _validate, "run": _run}[args.command](args)


def _load(args: argparse.Namespace):
    from .config import load_config

    return load_config(args.config, overrides=args.set)


def _validate(args: argparse.Namespace) -> int:
    from .plan import plan

    try:
        config = _load(args)
    except TunecellError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INVALID
    print(plan(config).describe())
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    from .errors import PassFailed
    from .runner import run

    try:
        config = _load(args)
    except TunecellError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INVALID
    try:
        result = run(config)
    except PassFailed as e:
        print(repr(e.result), file=sys.stderr)
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    except TunecellError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    print(repr(result))
    return EXIT_OK if result.status == "succeeded" else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
