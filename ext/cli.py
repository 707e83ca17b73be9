"""The command line: `tunecell validate CONFIG`, `tunecell run --config CONFIG [--set k=v ...] [--events FILE]`,
and for a recorded AzureML job `tunecell follow RUN` and `tunecell cancel RUN`.

`--events FILE` writes every event of the run as one JSON line (Event.to_json), flushed line by line: the event
stream a remote run (AzureML) leaves for the notebook to replay. `--events -` writes them to stdout, each line
prefixed with EVENT_PREFIX so they can be told apart from the libraries' own output in a job's log.
"""
from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import os
import sys
import threading
from pathlib import Path
from typing import Optional, Sequence

from .errors import TunecellError

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2
EVENT_PREFIX = "tunecell-event: "


def entry() -> int:
    """The `tunecell` command: ``main()``, then the end of the process without the interpreter's teardown
    (``exit_without_teardown``)."""
    code = main(whole_process=True)
    exit_without_teardown(code)
    return code


def exit_without_teardown(code: int) -> None:
    """End the process with ``code`` as ``sys.exit`` would, less the interpreter's teardown: clearing every module
    and freeing, one by one, the objects torch, transformers and the rest made (about 2 s after importing them on
    this project's machine, 0.2 s even with the collector's walks frozen out: bench/README.md, change 22). atexit
    handlers run (weakref finalizers, temporary folders included) and the Python and C standard streams are flushed
    first; every file tunecell writes is closed by then. Returns, and the process ends as usual, while another
    non-daemon thread runs (the interpreter would wait for it)."""
    current = threading.current_thread()
    if any(t is not current and not t.daemon and t.is_alive() for t in threading.enumerate()):
        return
    try:
        flush_c_streams = ctypes.CDLL(None).fflush  # what C and C++ libraries printed
    except (AttributeError, OSError, TypeError):  # no C library to reach this way (Windows): end as usual
        return
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, OSError, ValueError):  # replaced, closed or gone
            stream.flush()
    flush_c_streams(None)
    os._exit(code)


def main(argv: Optional[Sequence[str]] = None, *, whole_process: bool = False) -> int:
    """``whole_process``: the process does nothing else (the console script, an AzureML job), so a run may keep
    libraries its config cannot use from being imported at all."""
    from .config.schema import DEFAULT_CACHE_DIR

    parser = argparse.ArgumentParser(prog="tunecell", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    validate = sub.add_parser("validate", help="check a config and print the plan it makes")
    validate.add_argument("config", help="a YAML or JSON config file (any Olive dialect)")
    validate.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one key")
    run = sub.add_parser("run", help="run a config's passes")
    run.add_argument("--config", required=True, help="a YAML or JSON config file (any Olive dialect)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one key")
    run.add_argument("--events", action="append", default=[], metavar="FILE",
                     help="append every event as a JSON line to FILE (- for stdout, prefixed); may be repeated")
    run.add_argument("--progress", choices=("text", "none"), default="text",
                     help="text: progress bars on stderr (the default); none: no bars")
    for name, text in (("follow", "follow a recorded AzureML job again, to its end, and fetch its outputs"),
                       ("cancel", "cancel a recorded AzureML job")):
        job = sub.add_parser(name, help=text)
        job.add_argument("run_id", metavar="RUN", help="the job's name, as `tunecell run` printed it")
        job.add_argument("--cache-dir", default=DEFAULT_CACHE_DIR, help="the cache folder of the run that submitted it")
    args = parser.parse_args(argv)
    args.whole_process = whole_process
    return {"validate": _validate, "run": _run, "follow": _follow, "cancel": _cancel}[args.command](args)


def _load(args: argparse.Namespace):
    from .config import load_config

    return load_config(args.config, overrides=args.set)


def _preflight(config) -> None:
    """What a run checks first on this machine: its data files and its output_dir."""
    from .runner.dispatch import remote_system
    from .runner.preflight import check

    check(config, remote=remote_system(config) is not None)


def _validate(args: argparse.Namespace) -> int:
    from .planner import plan
    from .runner.dispatch import remote_system

    try:
        config = _load(args)
    except TunecellError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INVALID
    print(plan(config).describe())  # then what a run would refuse on this machine
    try:
        _preflight(config)
        if remote_system(config) is not None:
            _build_job_offline(config)
    except TunecellError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INVALID
    return EXIT_OK


def _build_job_offline(config) -> None:
    """The AzureML job a run would submit, built and thrown away: what the job needs here (its environment's conda
    file, the data it uploads) is checked without contacting Azure."""
    import tempfile

    from .azureml import build_job

    with tempfile.TemporaryDirectory() as code_dir:
        build_job(config, code_dir=code_dir, keyvault_name="workspace-vault")  # submit() asks the workspace


def _run(args: argparse.Namespace) -> int:
    from .errors import ConfigError, PassFailed
    from .runner import run

    try:
        config = _load(args)
        _preflight(config)
    except TunecellError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INVALID
    if args.whole_process and not uses_bitsandbytes(config):
        # peft and transformers' Trainer import bitsandbytes whenever it is installed: 2-4 MB here, once its
        # torch.compile calls wait for first use (tunecell.imports; before that, 1.1-1.4 s and 45 MB). A blocked
        # import reads as "not installed" to both, who cache that answer: so only in a process that runs nothing
        # after this config.
        sys.modules.setdefault("bitsandbytes", None)
    with contextlib.ExitStack() as stack:
        try:
            subscribers = [_event_writer(stack, target) for target in args.events]
        except OSError as e:
            print(f"error: --events {e.filename}: {e.strerror}", file=sys.stderr)
            return EXIT_INVALID
        try:
            result = run(config, subscribers=subscribers, progress=args.progress)
        except PassFailed as e:
            print(repr(e.result), file=sys.stderr)
            print(f"error: {e}", file=sys.stderr)
            return EXIT_FAILED
        except ConfigError as e:  # found before any pass ran (a training_args name only transformers knows)
            print(f"error: {e}", file=sys.stderr)
            return EXIT_INVALID
        except TunecellError as e:
            print(f"error: {e}", file=sys.stderr)
            return EXIT_FAILED
    return _report(result, config.resolve(config.cache_dir))


def _report(result, cache_dir: Path) -> int:
    print(repr(result))
    if result.status == "running":  # an AzureML job whose following was interrupted
        from .azureml.submission import cache_dir_option

        where = cache_dir_option(cache_dir)
        print(f"AzureML job {result.run_id} keeps running: `tunecell follow {result.run_id}{where}` follows it "
              f"again, `tunecell cancel {result.run_id}{where}` stops it", file=sys.stderr)
    return EXIT_OK if result.status == "succeeded" else EXIT_FAILED


def _follow(args: argparse.Namespace) -> int:
    from .azureml import reconnect
    from .runner.dispatch import follow_remote
    from .runner.progress import TextProgress

    try:
        result = follow_remote(reconnect(args.run_id, args.cache_dir, subscribers=[TextProgress()]))
    except TunecellError as e:  # PassFailed included: a pass that failed there
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    return _report(result, Path(args.cache_dir).absolute())


def _cancel(args: argparse.Namespace) -> int:
    from .azureml import cancel

    try:
        cancel(args.run_id, args.cache_dir)
    except TunecellError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    print(f"cancelling AzureML job {args.run_id}")
    return EXIT_OK


def uses_bitsandbytes(config) -> bool:
    """Whether a run of ``config`` may need bitsandbytes: a QLoRA pass, another package's pass, or an input model
    quantized with it."""
    from .passes.registry import pass_specs

    specs = [pass_specs()[p.type] for p in config.passes.values()]
    if any(s.source != "tunecell" or "bitsandbytes" in s.packages for s in specs):
        return True
    return _quantized_with_bitsandbytes(config.input_model)


def _quantized_with_bitsandbytes(input_model) -> bool:
    """Whether the local HF folder the run will load (as resolve_model finds it) names bitsandbytes in its
    config.json."""
    spec = input_model.model_path
    model_config = Path(spec).expanduser() / "config.json" if isinstance(spec, str) else None
    return bool(model_config and model_config.is_file() and "bitsandbytes" in model_config.read_text(errors="replace"))


def _event_writer(stack: contextlib.ExitStack, target: str):
    """A subscriber writing each event as one JSON line, flushed at once (a reader may be tailing the file)."""
    if target == "-":
        def to_stdout(event) -> None:
            print(EVENT_PREFIX + event.to_json(), flush=True)
        return to_stdout
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = stack.enter_context(open(path, "a", encoding="utf-8"))

    def to_file(event) -> None:
        handle.write(event.to_json() + "\n")
        handle.flush()
    return to_file


if __name__ == "__main__":
    sys.exit(entry())
