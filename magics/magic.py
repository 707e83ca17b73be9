"""The TuneCell magics: a thin shell over tunecell's Python API (load_config, plan, run, load_model)."""
from __future__ import annotations

import inspect
import os
import shlex
import sys
import threading
from pathlib import Path
from typing import Any, Optional

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_cell_magic, line_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, magic_arguments
from IPython.display import display
from traitlets import Bool, Enum, Unicode

from .background import BackgroundRun

SUBCOMMANDS = {  # %tunecell's subcommands and their arguments
    "status": "", "runs": "[--cache-dir DIR]", "cancel": "[RUN] [--cache-dir DIR]", "logs": "[RUN] [--cache-dir DIR]",
    "follow": "[RUN] [--cache-dir DIR]", "export": "[RUN] FILE", "cache": "[clear] [--cache-dir DIR]", "passes": "",
    "version": "",
}


def _usage(subcommand: Optional[str] = None) -> str:
    if subcommand is None:
        return f"usage: %tunecell {' | '.join(SUBCOMMANDS)} (%tunecell? for more)"
    return f"usage: %tunecell {subcommand} {SUBCOMMANDS[subcommand]}".rstrip()


def _arguments(magic: Any, line: str) -> Any:
    """The magic's arguments, its line split as a shell splits it (as %tunecell and the tunecell command do): quotes
    group words and are removed, --set 'passes.lora.target_modules=[q_proj, v_proj]'. IPython's parse_argstring
    keeps the quotes. On Windows a backslash is a path's separator, not an escape."""
    lexer = shlex.shlex(line, posix=True)
    lexer.whitespace_split, lexer.commenters = True, ""
    if os.name != "posix":
        lexer.escape = ""
    try:
        words = list(lexer)
    except ValueError as e:  # an unclosed quote
        raise UsageError(f"{e}: {line}") from None
    return magic.parser.parse_args(words)  # its parser raises UsageError


def _take_cache_dir(words: list[str]) -> tuple[list[str], dict[str, str]]:
    """The words without ``--cache-dir DIR``, and DIR as the subcommand's keyword."""
    if "--cache-dir" not in words[:-1]:
        return words, {}
    at = words.index("--cache-dir")
    return words[:at] + words[at + 2:], {"cache_dir": words[at + 1]}


def _accepts(function: Any, args: list[str], options: dict[str, str]) -> bool:
    """Whether ``function`` takes these arguments (extra words, or --cache-dir where it means nothing: no)."""
    try:
        inspect.signature(function).bind(*args, **options)
    except TypeError:
        return False
    return True


def _written_line(line: str) -> str:
    """The magic line of the cell that the preview's "Write config" adds: no --preview, so that it runs the workflow,
    and no --set: the config it writes has them applied (kept, they would undo the preview's changes to them)."""
    words, kept = iter(shlex.split(line)), []
    for word in words:
        if word == "--set":
            next(words, None)
        elif word != "--preview" and not word.startswith("--set="):
            kept.append(word)
    return shlex.join(kept)


def _absolute(path: str) -> Path:
    return Path(os.path.abspath(os.path.expanduser(path)))


def _folder_state(folder: Path) -> tuple:
    """The names and times of a folder's files: a run that writes a new model into the folder changes them."""
    return tuple((f.name, f.stat().st_mtime_ns) for f in sorted(folder.iterdir()))


def _workflow_arguments(name: str):
    # magic_arguments writes the usage line as "%" + name: "%finetune" names the cell magic %%finetune
    return lambda func: _add_workflow_arguments(func, name)


def _add_workflow_arguments(func, name: str):
    for decorator in reversed([
        magic_arguments(name=f"%{name}"),
        argument("-f", "--file", help="load the config from this file; the cell body, if any, overrides its keys"),
        argument("-o", "--out", metavar="NAME", help="store the RunResult in this notebook variable"),
        argument("--from", dest="from_", metavar="NAME",
                 help="start from the model of an earlier run (a variable set with -o)"),
        argument("--set", action="append", default=[], metavar="KEY=VALUE",
                 help="override one config key, e.g. --set passes.lora.r=8"),
        argument("--target", help="where to run: local, or the name of a system in the config"),
        argument("--dry-run", action="store_true", help="validate, show the plan and notes; run nothing"),
        argument("--preview", action="store_true", help="show the training samples as the model will see them"),
        argument("--form", action="store_true",
                 help="edit the config in a form (YAML, plan and cost beside it); Apply rewrites this cell"),
        argument("--export", metavar="FILE", help="write the normalised config (.json Olive-style, .yaml) and stop"),
        argument("--background", action="store_true",
                 help="return at once with a handle; progress keeps updating; Cancel stops the run"),
    ]):
        func = decorator(func)
    return func


def _export(config: Any, path: str) -> None:
    from tunecell.config.export import export_config

    try:
        notes = export_config(config, path)
    except ValueError as e:  # a suffix other than .json / .yaml
        raise UsageError(f"--export {path}: {e}") from None
    print(f"wrote {path}")
    for note in notes:
        print(f"note: {note}")


@magics_class
class TuneCell(Magics):
    """Fine-tune, merge, convert and evaluate models from notebook cells. Settings: %config TuneCell."""

    cache_dir = Unicode(None, allow_none=True, config=True,
                        help="cache folder used when a config does not name one")
    default_target = Unicode("local", config=True, help="target used when neither the config nor --target name one")
    short_errors = Bool(True, config=True, help="show a short message for a failed pass; False shows the traceback")
    progress = Enum(["auto", "widgets", "text", "none"], default_value="auto", config=True,
                    help="how runs show progress: widgets in a notebook, text bars in a terminal (auto picks)")

    def __init__(self, shell: Any):
        super().__init__(shell)
        self.runs: dict[str, Any] = {}  # run id -> RunResult or BackgroundRun, this session
        self._models: dict[Path, tuple[tuple, Any]] = {}  # folder -> (its files' state when loaded, the model)

    # ------------------------------------------------------------------------------------- cell magics
    @no_var_expand
    @_workflow_arguments("finetune")
    @line_cell_magic
    def finetune(self, line: str, cell: Optional[str] = None) -> Any:
        """Run a workflow config (any Olive dialect, YAML or JSON): fine-tuning, merge, and what else it holds.
        The line form (%finetune -f FILE) runs a config file as it is."""
        return self._workflow(self.finetune, line, cell or "")

    @no_var_expand
    @_workflow_arguments("optimize")
    @line_cell_magic
    def optimize(self, line: str, cell: Optional[str] = None) -> Any:
        """Convert and evaluate: the body's passes (ModelBuilder ...) on its input_model, or on --from NAME.
        The line form (%optimize --from NAME) runs the passes of NAME's config that it did not run."""
        return self._workflow(self.optimize, line, cell or "")

    @no_var_expand
    @magic_arguments(name="%generate")
    @argument("--model", help="a RunResult variable, a run's output folder, or an ONNX/HF model folder")
    @argument("--max-new-tokens", type=int, default=64)
    @cell_magic
    def generate(self, line: str, cell: str) -> None:
        """Each line of the body is a prompt; prints the model's answer and its speed."""
        from tunecell.inference import ContextFull

        args = _arguments(self.generate, line)
        if args.max_new_tokens < 1:
            raise UsageError(f"--max-new-tokens {args.max_new_tokens}: give 1 or more")
        model = self._model(args.model)
        for prompt in (p for p in cell.splitlines() if p.strip()):
            prompt = prompt.replace("\\n", "\n")  # a written \n is a newline (unicode_escape would garble non-ASCII)
            try:
                text, tokens, seconds = model.generate_with_stats(prompt, args.max_new_tokens)
            except ContextFull as e:
                raise UsageError(str(e)) from None
            rate = f"{tokens / seconds:.1f} tokens/s" if seconds > 0 else ""
            print(f">>> {prompt}\n{text.strip()}\n    ({tokens} tokens, {rate})")

    @line_magic
    def tunecell(self, line: str) -> Any:
        """%tunecell status | runs | cancel [RUN] | logs [RUN] | follow [RUN] | export [RUN] FILE | cache [clear] |
        passes | version

        runs, cancel, logs, follow and cache look in the cache folders of this session's runs and in
        %config TuneCell.cache_dir; with --cache-dir DIR, in DIR only (after a kernel restart, for a config's own
        cache_dir): %tunecell follow RUN --cache-dir DIR. RUN may also be an AzureML job recorded there (by an
        earlier kernel too): cancel cancels the job, logs shows its log so far, follow shows its progress again and
        fetches its outputs when it ends. passes lists the pass types, with their options."""
        try:
            words = shlex.split(line)
        except ValueError as e:  # an unclosed quote
            raise UsageError(f"{e}; {_usage()}") from None
        if not words or words[0] not in SUBCOMMANDS:
            raise UsageError(_usage())
        command = getattr(self, f"_cmd_{words[0]}")
        args, options = _take_cache_dir(words[1:])
        if any(word.startswith("--") for word in args) or not _accepts(command, args, options):
            raise UsageError(_usage(words[0]))
        from tunecell.errors import TunecellError

        try:
            return command(*args, **options)
        except TunecellError as e:  # an AzureML job that cannot be reached, say: what to fix, no traceback
            raise UsageError(str(e)) from None

    # ---------------------------------------------------------------------------------------- the work
    def _workflow(self, magic: Any, line: str, cell: str) -> Any:
        from tunecell.errors import PassFailed, TunecellError

        args = _arguments(magic, line)
        try:
            if args.form:
                return self._form(magic.__name__, args, line, cell)
            config, start_from = self._config(args, cell)
            if args.export:
                _export(config, args.export)
                return None
            if args.dry_run:
                print(self._describe(config, args.from_, start_from))
                return None
            if args.preview:
                return self._preview(magic.__name__, line, cell, args, config)
            return self._run(config, args, start_from)
        except PassFailed as e:
            if e.result is not None:
                self._remember(e.result, args.out)
                display(e.result)  # the summary that a saved notebook keeps, then the short error
            if not self.short_errors:
                raise
            raise UsageError(f"{e}\n(for the full traceback: %config TuneCell.short_errors = False)") from None
        except TunecellError as e:  # a config, data or model error (ModelNotFound ...): what to fix, no traceback
            raise UsageError(str(e)) from None

    def _form(self, name: str, args: Any, line: str, cell: str) -> Any:
        """%%finetune --form: the config form over the body (laid over -f FILE / --from NAME); Apply rewrites this
        cell with the form's YAML and the line without --form (tunecell.widgets.form.cell_form)."""
        from tunecell.widgets.form import cell_form

        base: Any = args.file
        if args.from_:
            base = base or self._result_named(args.from_).config
        if not cell.strip() and base is None:
            raise UsageError("the cell has no config: write one in the body, or give -f FILE or --from NAME")
        overrides = list(args.set)
        if args.target:
            overrides += ["host=null", "target=null"] if args.target == "local" else \
                [f"host={args.target}", f"target={args.target}"]
        return cell_form(self.shell, name, line, cell, base=base, overrides=overrides)

    def _config(self, args: Any, cell: str) -> tuple[Any, Any]:
        from tunecell.config import load_config

        start_from = self._result_named(args.from_) if args.from_ else None
        base: Any = args.file
        if start_from is not None and base is None and start_from.config is not None:
            base = start_from.config
        body = cell if cell.strip() else None
        if body is None and base is None:
            raise UsageError("the cell has no config: write one in the body, or give -f FILE or --from NAME")

        def load(target: Optional[str]) -> Any:
            overrides = list(args.set)
            if target == "local":
                overrides += ["host=null", "target=null"]
            elif target:
                overrides += [f"host={target}", f"target={target}"]
            return load_config(body if body is not None else base, self.shell.user_ns, overrides,
                               base=base if body is not None else None)

        config = load(args.target)
        if not args.target and self.default_target != "local" and config.host is None and config.target is None:
            config = load(self.default_target)  # the default only where the config names no target
        if self.cache_dir and "cache_dir" not in config.model_fields_set:
            config.cache_dir = self.cache_dir
        return config, start_from

    def _preview(self, magic: str, line: str, cell: str, args: Any, config: Any) -> Any:
        """The preview; its "Write config" adds a cell below with the config it wrote (as the form's Apply, later
        clicks are written when this cell runs again: see widgets/form.py write_cell)."""
        from tunecell.widgets import preview
        from tunecell.widgets.form import request_id, take_held, write_cell

        key = f"{line}\n{cell}"
        held = take_held(self.shell, key)
        if held is not None:
            self.shell.set_next_input(held)
            print("the cell below holds the config written from the preview: run it to start the workflow")
            return None
        # Given the cell text as it is, "Write config" keeps its comments and layout.
        source = cell if cell.strip() and not (args.file or args.from_ or args.set) else config
        head, origin = f"%%{magic} {_written_line(line)}".rstrip(), request_id(self.shell)

        def write(text: str) -> Optional[str]:
            if write_cell(self.shell, key, f"{head}\n{text}", origin, replace=False):
                return None
            return "run this cell again to add a cell with this config below it"

        from tunecell.data.tokenizer import load_tokenizer

        # the tokenizer of the config as this magic loaded it: with %config TuneCell.cache_dir, a --target's
        return preview(source, load_tokenizer(None, config), namespace=self.shell.user_ns, base_dir=config.base_dir,
                       on_write=write)

    def _describe(self, config: Any, name: Optional[str], start_from: Any) -> str:
        """The plan of what a run would do: from --from NAME, only the passes that NAME's run did not."""
        from tunecell.planner import plan
        from tunecell.runner.local import remaining_passes

        lines = plan(config, remaining_passes(config, start_from)).describe().splitlines()
        if start_from is not None:  # in place of the config's input model
            lines[0] = f"input model: the model of {name} (run {start_from.run_id}): {start_from.model_path}"
        return "\n".join(lines)

    def _run(self, config: Any, args: Any, start_from: Any) -> Any:
        from tunecell.runner import run
        from tunecell.runner.dispatch import remote_system

        stop = threading.Event()
        mode = self._progress_mode()
        subscribers, view = [], None
        if mode == "widgets":
            from tunecell.widgets.progress import RunProgress

            # Cancel only in the background: while the cell runs, the kernel handles the click only once it has ended
            view = RunProgress(stop_event=stop if args.background else None)
            display(view)
            subscribers.append(view)
        text = mode == "text" and not args.background  # a thread's prints would land in whichever cell runs
        kwargs = dict(subscribers=subscribers, progress="text" if text else "none", stop=stop, start_from=start_from)
        try:
            if remote_system(config) is not None:  # submit here and now (login, job link), then follow like a run
                run = self._submit(config, kwargs)
            if args.background:
                return self._background(run, config, kwargs, stop, view, args.out)
            result = run(config, **kwargs)
        except BaseException as e:  # a missing data file, a failed login ...: the view says so, not "waiting"
            if view is not None:
                interrupted = isinstance(e, KeyboardInterrupt)
                view.fail("interrupted before the run started" if interrupted else str(e) or type(e).__name__,
                          "interrupted" if interrupted else "failed")
            raise
        self._remember(result, args.out)
        display(result)
        if result.status == "interrupted":
            raise UsageError("interrupted" + (f"; checkpoint saved in {result.checkpoint}" if result.checkpoint else "")
                             + ". Run the cell again to resume.")
        if result.failed_goals:  # the cell fails, as `tunecell run` exits 1: papermill stops here
            raise UsageError("goal missed: " + "; ".join(result.failed_goals))
        return None

    def _background(self, run: Any, config: Any, kwargs: dict[str, Any], stop: threading.Event, view: Any,
                    out: Optional[str]) -> BackgroundRun:
        def done(handle: BackgroundRun) -> None:
            if handle.result is not None:
                self._remember(handle.result, None)
                if view is not None:  # the summary is the handle's output below the view (a saved notebook keeps it)
                    view.finish(handle.result, summary=False)
            elif view is not None:  # it failed before it started: the error does
                view.fail(str(handle.error))

        handle = BackgroundRun(run, config, kwargs, stop, on_done=done)
        self.runs[handle.id] = handle
        if out:
            self.shell.user_ns[out] = handle
        print(f"running in the background as {handle.id}: %tunecell status, %tunecell cancel {handle.id}")
        return handle

    def _submit(self, config: Any, kwargs: dict[str, Any]) -> Any:
        """Create the AzureML job now; returns a run()-like function that follows it (Cancel cancels the job)."""
        from tunecell.azureml import submit
        from tunecell.runner.dispatch import follow_remote

        if kwargs.get("start_from") is not None:
            raise UsageError("--from is not supported on an AzureML target yet")
        handle = submit(config, subscribers=kwargs["subscribers"], progress=kwargs["progress"])
        self.runs[handle.run_id] = handle
        display(handle)
        return lambda _config, stop=None, **_: follow_remote(handle, stop)

    def _progress_mode(self) -> str:
        if self.progress != "auto":
            return self.progress
        return "widgets" if in_kernel(self.shell) else "text"

    def _remember(self, result: Any, name: Optional[str]) -> None:
        self.runs[result.run_id] = result
        if name:
            self.shell.user_ns[name] = result

    # ----------------------------------------------------------------------------------------- lookups
    def _result_named(self, name: str) -> Any:
        value = self.shell.user_ns.get(name)
        if isinstance(value, BackgroundRun):
            value = _ended(value)
        if value is None or not hasattr(value, "final"):
            raise UsageError(f"--from {name}: no run result called {name!r} in the notebook; "
                             "store one with %%finetune -o NAME")
        return value

    def _run_named(self, run_id: Optional[str]) -> Any:
        if not self.runs:
            raise UsageError("no runs in this session yet")
        if run_id is None:
            return list(self.runs.values())[-1]
        if run_id in self.runs:
            return self.runs[run_id]
        value = self.shell.user_ns.get(run_id)
        if value is not None and hasattr(value, "run_id"):
            return value
        raise UsageError(f"no run {run_id!r}; runs: {', '.join(self.runs)}")

    def _model(self, name: Optional[str]) -> Any:
        from tunecell.inference import load_model

        value: Any = self.shell.user_ns.get(name) if name else self._run_named(None)
        if isinstance(value, BackgroundRun):
            value = _ended(value)
        if hasattr(value, "artifacts"):  # a RunResult
            path = value.model_path or value.artifacts.get("model")
            if path is None:
                raise UsageError(f"run {value.run_id} produced no model")
        elif hasattr(value, "generate_with_stats"):
            return value
        elif name is None:  # the session's last run is an AzureML job's handle
            raise UsageError(f"{value!r} is not a run result: give --model")
        else:
            path = name
        path = Path(path)
        if (path / "model").is_dir():  # a run's output folder
            path = path / "model"
        if not path.is_dir():
            raise UsageError(f"--model {name}: not a run result in the notebook nor a model folder")
        state = _folder_state(path)
        loaded = self._models.get(path)
        if loaded is None or loaded[0] != state:  # first use, or a run has written a new model there since
            try:
                self._models[path] = (state, load_model(path))
            except FileNotFoundError as e:  # a folder with no model in it
                raise UsageError(f"--model {name}: {e}") from None
        return self._models[path][1]

    # ----------------------------------------------------------------------------------- subcommands
    def _cmd_status(self) -> None:
        if not self.runs:
            print("no runs in this session")
        # a finished background run is also kept under its run's id: one line says both
        through = {v.result.run_id for v in self.runs.values() if isinstance(v, BackgroundRun) and v.result is not None}
        for run_id, value in self.runs.items():
            if isinstance(value, BackgroundRun) and value.result is not None:
                print(f"{run_id}: {value.status} (run {value.result.run_id})")
            elif run_id not in through:
                print(f"{run_id}: {value.status}")

    def _cmd_runs(self, *, cache_dir: Optional[str] = None) -> None:
        from tunecell.runner.history import recorded_runs

        found: dict[str, dict[str, Any]] = {}
        folders = self._cache_dirs(cache_dir)
        for record in (r for folder in folders for r in recorded_runs(folder)):
            # an AzureML run has a line at submission and at its end
            found[record["run_id"]] = {**found.get(record["run_id"], {}), **record}
        if not found:
            print(f"no runs recorded under {', '.join(map(str, folders))}")
        for record in found.values():
            where = f"AzureML job {record.get('studio_url') or ''}" if record.get("backend") == "azureml" else ""
            print(f"{record['run_id']}: {record['status']}  {record.get('manifest') or where}".rstrip())

    def _cmd_cancel(self, run_id: Optional[str] = None, *, cache_dir: Optional[str] = None) -> None:
        value = self._run_or_job(run_id, cache_dir)
        if hasattr(value, "job_name"):  # an AzureML job
            value.cancel()
            print(f"cancelling AzureML job {value.job_name}")
            return
        if not isinstance(value, BackgroundRun) or value.done:
            raise UsageError(f"run {value.run_id} has finished ({value.status}); nothing to cancel")
        value.cancel()
        print(f"cancelling {value.id}: it stops at the next step")

    def _cmd_logs(self, run_id: Optional[str] = None, *, cache_dir: Optional[str] = None) -> None:
        value = self._run_or_job(run_id, cache_dir)
        lines = value.fetch_logs() if hasattr(value, "fetch_logs") else value.logs
        print("\n".join(lines) or "(no log lines)")

    def _cmd_follow(self, run_id: Optional[str] = None, *, cache_dir: Optional[str] = None) -> None:
        value = self._run_or_job(run_id, cache_dir)
        if not hasattr(value, "follow"):
            raise UsageError(f"run {value.run_id} is not an AzureML job left to follow ({value.status})")
        subscribers, mode = [], self._progress_mode()
        if mode == "widgets":
            from tunecell.widgets.progress import RunProgress

            view = RunProgress(on_cancel=value.cancel)
            display(view)
            subscribers.append(view)
        result = value.follow(subscribers, progress="text" if mode == "text" else None)
        self._remember(result, None)
        display(result)

    def _run_or_job(self, run_id: Optional[str], cache_dir: Optional[str]) -> Any:
        """A run of this session, or a handle on the AzureML job recorded as ``run_id`` (after a kernel restart, or
        a job left running when following it was interrupted)."""
        value = self.runs.get(run_id) if run_id is not None else (list(self.runs.values())[-1] if self.runs else None)
        if value is not None and getattr(value, "status", None) != "running":
            return value
        name = run_id or getattr(value, "run_id", None)
        from tunecell.runner.history import recorded_runs

        folder = next((folder for folder in self._cache_dirs(cache_dir) if any(
            r.get("run_id") == name and r.get("backend") == "azureml" for r in recorded_runs(folder))), None)
        if folder is not None:
            from tunecell.azureml import reconnect

            self.runs[name] = handle = reconnect(name, folder)
            return handle
        return value if value is not None else self._run_named(run_id)

    def _cmd_export(self, run_or_file: str, file: Optional[str] = None) -> None:
        value = self._run_named(run_or_file if file else None)  # a background run's config is known from its start
        _export(value.config, file or run_or_file)

    def _cmd_cache(self, action: Optional[str] = None, *, cache_dir: Optional[str] = None) -> None:
        import shutil

        if action not in (None, "clear"):
            raise UsageError(_usage("cache"))
        folders = self._cache_dirs(cache_dir)
        if action == "clear":  # one folder: another may hold the record of an AzureML job still running
            shutil.rmtree(folders[0], ignore_errors=True)
            print(f"cleared {folders[0]}")
            for other in folders[1:]:
                print(f"kept {other} (%tunecell cache clear --cache-dir {other})")
            return
        for root in folders:
            size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) if root.exists() else 0
            print(f"{root}: {size / 1e6:.1f} MB")

    def _cmd_passes(self) -> None:
        from tunecell.passes.registry import describe_passes, refresh

        refresh()  # a package installed since the last look
        print(describe_passes())

    def _cmd_version(self) -> None:
        from tunecell import __version__
        from tunecell.runner.manifest import PACKAGES, package_versions

        print(f"tunecell {__version__}")
        for name, version in package_versions(PACKAGES[1:]).items():
            print(f"  {name} {version or '(not installed)'}")

    def _cache_dirs(self, given: Optional[str] = None) -> list[Path]:
        """Where runs are recorded: ``given``, else the configured cache folder and those this session's runs used
        (a config's own cache_dir, resolved as the runner does)."""
        from tunecell.config.schema import DEFAULT_CACHE_DIR

        if given is not None:
            return [_absolute(given)]
        folders = [_absolute(self.cache_dir or DEFAULT_CACHE_DIR)]
        for value in self.runs.values():
            if getattr(value, "cache_dir", None):  # an AzureML handle knows where its job is recorded
                folders.append(value.cache_dir)
            elif value.config is not None:
                folders.append(value.config.resolve(value.config.cache_dir))
        return list(dict.fromkeys(folders))


def in_kernel(shell: Any) -> bool:
    """A Jupyter kernel's shell, or a subclass of it (Colab's is named Shell), where widgets display."""
    return "ipykernel" in sys.modules and any(c.__name__ == "ZMQInteractiveShell" for c in type(shell).__mro__)


def _ended(handle: BackgroundRun) -> Any:
    """A background run's result: one still going is waited for, and the cell says so."""
    if not handle.done:
        print(f"waiting for {handle.id} to end (interrupt the kernel to stop waiting; the run goes on)")
    return handle.wait()
