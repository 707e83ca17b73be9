"""load_config: text (YAML or JSON, any Olive dialect) -> one validated WorkflowConfig, or a located ConfigError."""
from __future__ import annotations

import difflib
import os
import re
import typing
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Union

from pydantic import BaseModel, Tag, ValidationError

from ..errors import ConfigError
from . import references, schema, search_space
from .dialects import RENAMED_KEYS, normalise
from .located import LocatedDict, LocatedList, Position, labelled, locate, parse_text
from .training_args import TRAINING_ARGUMENT_NAMES

Source = Union[str, os.PathLike, Mapping[str, Any], schema.WorkflowConfig]


def load_config(source: Source, namespace: Optional[Mapping[str, Any]] = None,
                overrides: Iterable[str] = (), base: Optional[Source] = None) -> schema.WorkflowConfig:
    """Load and validate a config from YAML/JSON text, a file path, or a dict.

    ``{{ name }}`` in text is filled from ``namespace`` first (strict: an undefined name is an error).
    ``base``: another config that ``source`` is laid over, key by key (data configs by name).
    ``overrides`` are ``key.path=value`` strings applied last (``passes.lora.r=8``).
    The result carries the dialect notes in ``config.notes``.
    """
    tree, notes, base_dir = _tree(source, namespace)
    base_name = None
    if base is not None:
        named = _named_file(base) if isinstance(base, (str, os.PathLike)) else None
        base_name = str(named) if named is not None else "the base config"
        try:
            base_tree, base_notes, base_base_dir = _tree(base, namespace)
        except ConfigError as e:  # its line numbers are the base's, which the cell's would otherwise look like
            if e.line is None and base_name in e.message:
                raise
            if e.line is not None:
                raise _error_at((e.line, e.column, base_name), e.message, e.path, e.hint) from None
            raise ConfigError(f"{e.message} ({base_name})", path=e.path, column=e.column, hint=e.hint) from None
        labelled(base_tree, base_name)
        tree, notes, base_dir = _overlay(base_tree, tree), base_notes + notes, base_dir or base_base_dir
    written = [(item, _locating(lambda: apply_override(tree, item), tree)) for item in overrides]
    try:
        models = _pass_models()
        space = search_space.extract(tree, models)
        _locating(lambda: search_space.validate(space, tree, models), tree)
        try:
            config = _workflow_model().model_validate(tree)
        except ValidationError as e:
            raise _config_error(e, tree) from None
        config._search_space = space
        _locating(lambda: references.check(config), tree)
    except ConfigError as e:
        raise _placed_at_override(e, written, base_name) from None
    config._notes = notes
    config._base_dir = str(base_dir) if base_dir else None
    _anchor_model_paths(config)
    return config


def _anchor_model_paths(config: schema.WorkflowConfig) -> None:
    """A relative input model path that names something next to the config file becomes that absolute path: it
    starts at the config's folder as data_files do, wherever the run is started (a hub name is left as it is)."""
    model = config.input_model
    for key in ("model_path", "adapter_path"):
        value = getattr(model, key)
        if isinstance(value, str) and config.base_dir and not Path(value).expanduser().is_absolute() \
                and config.resolve(value).exists():
            setattr(model, key, str(config.resolve(value)))


def _workflow_model() -> type[schema.WorkflowConfig]:
    from ..passes.registry import workflow_model

    return workflow_model()


def _pass_types() -> tuple[str, ...]:
    return tuple(_pass_models())


def _pass_models() -> dict[str, type]:
    from ..passes.registry import pass_specs

    return {name: spec.config_model for name, spec in pass_specs().items()}


def _tree(source: Source, namespace: Optional[Mapping[str, Any]]) -> tuple[LocatedDict, list[str], Optional[Path]]:
    if isinstance(source, schema.WorkflowConfig):
        from .export import minimal_dict

        # keep the folder relative data paths start from, and the notes of the dialect it was first written in
        kept_dir, kept_notes = (Path(source.base_dir) if source.base_dir else None), list(source.notes)
        raw = minimal_dict(source)
        tree, notes = _locating(lambda: normalise(raw), raw)
        return tree, kept_notes + notes, kept_dir
    text, base_dir = _read(source)
    if text is not None:
        text = fill_template(text, namespace or {})
        raw = parse_text(text)
        if not isinstance(raw, dict):
            raise _not_a_mapping(raw, text)
    else:
        raw = source
    tree, notes = _locating(lambda: normalise(raw), raw)
    return tree, notes, base_dir


def _overlay(base: Any, top: Any) -> Any:
    """``top`` laid over ``base``: mappings merge key by key, named lists (data_configs) entry by entry."""
    if isinstance(base, LocatedDict) and isinstance(top, dict):
        base.pos = getattr(top, "pos", None)
        for key, value in top.items():
            base.put(key, _overlay(base[key], value) if key in base else value, getattr(top, "key_pos", {}).get(key))
        return base
    named = isinstance(base, list) and isinstance(top, list) and \
        all(isinstance(x, dict) and "name" in x for x in list(base) + list(top))
    if named:
        merged = {x["name"]: x for x in base}
        for x in top:
            merged[x["name"]] = _overlay(merged[x["name"]], x) if x["name"] in merged else x
        return LocatedList(merged.values())
    return top


def _read(source: Source) -> tuple[Optional[str], Optional[Path]]:
    if isinstance(source, Mapping):
        return None, None
    path = _named_file(source)
    if path is not None:
        if path.is_dir():
            raise ConfigError(f"{path} is a folder, not a config file", hint="name the YAML or JSON file in it")
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}", hint="check the path, relative to the current folder")
        return path.read_text(encoding="utf-8"), path.resolve().parent
    if not isinstance(source, str):
        raise ConfigError(f"a config is YAML/JSON text, a file path or a dict, not {type(source).__name__}")
    return source, None


def _named_file(source: Source) -> Optional[Path]:
    """The path ``source`` names: a PathLike, or one line of text that ends in .yaml/.yml/.json or names a file or
    folder that exists (any other text is the config itself)."""
    if isinstance(source, os.PathLike):
        return Path(source).expanduser()
    if not isinstance(source, str) or "\n" in source or not source.strip():
        return None
    path = Path(source.strip()).expanduser()
    if re.search(r"\.(ya?ml|json)$", source.strip()):
        return path
    try:
        return path if path.exists() else None
    except (OSError, ValueError):  # a one-line config longer than a file name, or holding a NUL
        return None


def _not_a_mapping(raw: Any, text: str) -> ConfigError:
    """The text parsed, but to nothing, a list or a single value: say what it is, on its first line."""
    first = next((i for i, ln in enumerate(text.splitlines(), 1) if ln.strip() and not ln.lstrip().startswith("#")),
                 1)
    if raw is None:
        return ConfigError("the config is empty", line=first,
                           hint="write a mapping of keys, starting with 'input_model:'")
    what = "a list" if isinstance(raw, list) else f"a single value ({_short(raw)})"
    return ConfigError(f"the config must be a mapping of keys (input_model, data_configs, passes, ...), not {what}",
                       line=getattr(raw, "pos", (first, 1))[0],
                       hint="start with 'input_model:'; a '- ' at the start of a line makes a list")


def _placed_at_override(error: ConfigError, written: list[tuple[str, tuple]], base_name: Optional[str]) -> ConfigError:
    """An error in what an override wrote (--set, a magic's --target): in its value, or in a key it created
    (engine.cache_dir=x: the unknown key 'engine'), names the override, not the line of the file whose value it
    replaced (nor the base config's name that _error_at gave that line)."""
    for item, key in written:
        if tuple(map(str, error.path[:len(key)])) == key:
            secret = "hf_token" in item or "hub_token" in item
            shown = f"{item.partition('=')[0]}=..." if secret else item  # a token is not echoed
            message = error.message.removesuffix(f" (line {error.line} of {base_name})")
            return ConfigError(f"{message} (from the override {shown})", path=error.path, hint=error.hint)
    return error


def _locating(action, tree: Any):
    """Run ``action``; give any ConfigError it raises without a line the position of its key path."""
    try:
        return action()
    except ConfigError as e:
        if e.line is None and e.path:
            clean, pos = locate(tree, e.path)
            raise _error_at(pos, e.message, clean, e.hint) from None
        raise


def _error_at(pos: Optional[Position], message: str, path: tuple, hint: Optional[str]) -> ConfigError:
    """A ConfigError at ``pos``; a line of the base config, not of the text laid over it, names its text."""
    if pos is not None and len(pos) > 2:
        message += f" (line {pos[0]} of {pos[2]})"
    return ConfigError(message, path=path, line=pos[0] if pos else None, column=pos[1] if pos else None, hint=hint)


# --------------------------------------------------------------------------------------- {{ }} filling
def literal_braces(text: str) -> str:
    """Config text written out (an export, a form's Apply) so that filling gives it back: each ``{{``, ``{%`` and
    ``{#`` becomes an expression that yields it, as a user writes literal braces."""
    return re.sub(r"\{[{%#]", lambda m: "{{ '" + m.group() + "' }}", text)


def fill_template(text: str, namespace: Mapping[str, Any]) -> str:
    """Fill ``{{ name }}`` from the notebook namespace (Jinja, strict). Text without ``{{`` is left alone."""
    if "{{" not in text and "{%" not in text:
        return text
    import jinja2

    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    try:
        return env.from_string(text).render(**namespace)
    except jinja2.TemplateSyntaxError as e:
        raise ConfigError(f"template syntax error: {e.message}", line=e.lineno,
                          hint="{{ name }} fills a value from the notebook; write {{ '{{' }} for literal braces") from None
    except jinja2.UndefinedError as e:
        match = re.search(r"'([^']+)' is undefined", str(e))
        if match is None:  # an attribute or item of a defined name: {{ cfg.lr }}
            raise ConfigError(f"cannot fill a {{{{ }}}} from the notebook: {e}", line=_template_line(e),
                              hint="check the name after the '.' or inside the [ ]") from None
        name = match.group(1)
        line = next((i for i, ln in enumerate(text.splitlines(), 1)
                     if re.search(r"{{[^}]*\b" + re.escape(name) + r"\b", ln)), None) or _template_line(e)
        if not namespace:  # the command line, or Python without a namespace: nothing can fill it
            raise ConfigError(f"{{{{ {name} }}}} is not defined: there is no notebook namespace to fill {{{{ }}}} from",
                              line=line, hint=f"define {name} in a notebook cell (from Python: pass namespace=), or "
                                              f"write the value in place of {{{{ {name} }}}}; {{{{ '{{{{' }}}} gives a "
                                              "literal {{") from None
        close = difflib.get_close_matches(name, [k for k in namespace if not k.startswith("_")], n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"define {name} in a cell above"
        raise ConfigError(f"{{{{ {name} }}}} is not defined in the notebook namespace", line=line, hint=hint) from None
    except Exception as e:  # an expression that fails: {{ 1 / 0 }}, a filter given the wrong value
        raise ConfigError(f"cannot fill a {{{{ }}}} from the notebook: {type(e).__name__}: {e}",
                          line=_template_line(e)) from None


def _template_line(error: BaseException) -> Optional[int]:
    """The line of the rendered template where ``error`` happened (Jinja puts template frames in the traceback)."""
    tb, line = error.__traceback__, None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


# ------------------------------------------------------------------------------------------- overrides
NAMED_SECTIONS = ("passes", "evaluators", "systems")


def apply_override(tree: LocatedDict, item: str) -> tuple:
    """``passes.lora.r=8``: set one key (YAML-typed value); data_configs entries are addressed by name.

    Returns the key path of what it wrote: the first key it created on the way (``passes.lora.config`` for
    ``passes.lora.config.r=4``), else the key it set."""
    import yaml

    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects key.path=value, got {item!r}", hint="for example --set passes.lora.r=8")
    parts = key.strip().split(".")
    node: Any = tree
    created: Optional[tuple] = None  # the first key the override adds
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            node = next((x for x in node if isinstance(x, dict) and x.get("name") == part), None) \
                if not part.isdigit() else (node[int(part)] if int(part) < len(node) else None)
        elif isinstance(node, dict) and i == 1 and parts[0] in NAMED_SECTIONS and part not in node:
            names = ", ".join(map(str, node)) or "none"  # a typo would otherwise add a new pass, evaluator or system
            raise ConfigError(f"--set {key}: there is no {parts[0]} entry {part!r} (there are: {names})",
                              path=tuple(parts[:i]), hint=_did_you_mean(part, [str(name) for name in node]))
        else:
            if created is None and isinstance(node, dict) and part not in node:
                created = tuple(parts[:i + 1])
            node = node.setdefault(part, LocatedDict()) if isinstance(node, dict) else None
        if node is None:
            raise ConfigError(f"--set {key}: nothing is called {part!r} there", path=tuple(parts[:i + 1]))
    if not isinstance(node, dict):
        raise ConfigError(f"--set {key}: {'.'.join(parts[:-1])} is not a mapping", path=tuple(parts[:-1]))
    try:
        node[parts[-1]] = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {key}: the value {value!r} is not valid YAML ({getattr(e, 'problem', None) or e})",
                          path=tuple(parts), hint="quote it: --set 'key=\"text\"'") from None
    return created or tuple(parts)


# ------------------------------------------------------------------------------ pydantic errors, located
def _config_error(error: ValidationError, tree: Any) -> ConfigError:
    errors = error.errors()
    # A misspelt key shows up twice: unknown under its wrong name, missing under its right one. The unknown key,
    # with its did-you-mean, is the one to show.
    first = next((e for e in errors if e["type"] == "extra_forbidden" or "extra_forbidden:" in e["msg"]), errors[0])
    loc = tuple(first["loc"])
    kind, message = first["type"], first["msg"]
    hint = None
    if kind == "value_error" and "extra_forbidden:" in message:  # TrainingArgs' own unknown-key check
        loc, kind = loc + (message.split("extra_forbidden:")[1],), "extra_forbidden"
    marker = schema.bool_for_number(first) if kind == "value_error" else None  # schema.Model's check
    if marker is not None:
        loc, message = loc + (marker[0],), marker[1]
    clean, pos = locate(tree, loc)
    if kind == "extra_forbidden":
        key = clean[-1]
        allowed = _allowed_keys(loc)
        message = f"unknown key {key!r}"
        hint = _did_you_mean(str(key), allowed)
    elif kind == "union_tag_invalid" and clean[:1] in (("passes",), ("systems",)):
        given = first["input"].get("type") if isinstance(first["input"], dict) else first["input"]
        what, known = ("pass", _pass_types()) if clean[0] == "passes" else ("system", schema.SYSTEM_TYPES)
        message = f"{what} type {given!r} is not supported yet (supported: {', '.join(known)})"
        close = difflib.get_close_matches(str(given), known, n=1)
        hint = f"did you mean {close[0]!r}?" if close else None
        clean, pos = locate(tree, loc[:2] + ("type",))
    elif kind == "union_tag_not_found":
        message = "this entry has no 'type'"
        known = schema.SYSTEM_TYPES if clean[:1] == ("systems",) else _pass_types()
        hint = f"add type: one of {', '.join(known)}"
    elif kind == "missing":
        message = f"{clean[-1]!r} is required here"
        clean, pos = clean, locate(tree, loc[:-1])[1]
    elif "input" in first and not (kind == "value_error" and isinstance(first["input"], dict)):
        message = f"{message} (got {_short(first.get('input'))})"  # (a whole section is not worth repeating)
        if kind == "string_type" and isinstance(first["input"], (bool, int, float)):
            hint = "quote it to keep it as text: YAML reads 0, 1.5, yes/no and true/false as numbers and booleans"
    same_place = [e for e in errors if locate(tree, tuple(e["loc"]))[0] == clean]
    if len(same_place) > 1 and kind not in ("missing", "extra_forbidden"):
        message = f"has the wrong type or value (got {_short(first.get('input'))}): expected one of " + \
            "; ".join(sorted({e["msg"].replace("Input should be ", "") for e in same_place}))
    others = len({locate(tree, tuple(e["loc"]))[0] for e in errors}) - 1
    if others:
        message += f" (and {others} more problem{'s' if others > 1 else ''})"
    message = re.sub(r" or (instance of \w+|object to extract fields from)", "",  # no pydantic jargon
                     message.replace("Value error, ", ""))
    return _error_at(pos, message, clean, hint)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _did_you_mean(key: str, allowed: Iterable[str]) -> Optional[str]:
    allowed = set(allowed)
    legacy = {old: new for table in RENAMED_KEYS.values() for old, new in table.items() if new in allowed}
    close = difflib.get_close_matches(key, list(allowed) + list(legacy), n=1, cutoff=0.6)
    if close:
        return f"did you mean {legacy.get(close[0], close[0])!r}?"
    shown = sorted(a for a in allowed if not a.startswith("_"))
    return "known keys here: " + ", ".join(shown[:25]) + (", ..." if len(shown) > 25 else "") if shown else None


def _allowed_keys(loc: tuple) -> set[str]:
    """The field names of the model that sits at ``loc[:-1]`` (walking the schema's annotations)."""
    tp: Any = _workflow_model()
    for seg in loc[:-1]:
        tp = _step(tp, seg)
        if tp is None:
            return set()
    model = _unwrap_model(tp)
    if model is None:
        return set()
    names = set(model.model_fields)
    return names | TRAINING_ARGUMENT_NAMES if model is schema.TrainingArgs else names


def _step(tp: Any, seg: Any) -> Any:
    model = _unwrap_model(tp)
    if model is not None:
        field = model.model_fields.get(seg)
        return field.annotation if field else None
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        return _step(args[0], seg)
    if origin in (list, dict):
        return args[-1]
    if origin is Union:
        for member in args:
            m = _unwrap_model(member)
            if m is not None and (m.__name__ == seg or m.model_fields.get("type") and m.model_fields["type"].default == seg):
                return m
            tags = [x.tag for x in typing.get_args(member)[1:] if isinstance(x, Tag)] \
                if typing.get_origin(member) is typing.Annotated else []
            if seg in tags:  # a member of a union with a callable discriminator (schema._resource_or_plain)
                return member
        non_none = [a for a in args if a is not type(None)]
        return _step(non_none[0], seg) if len(non_none) == 1 else None  # Optional adds no segment
    return None


def _unwrap_model(tp: Any) -> Optional[type[BaseModel]]:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp
    if typing.get_origin(tp) is typing.Annotated:
        return _unwrap_model(typing.get_args(tp)[0])
    if typing.get_origin(tp) is Union:
        models = [m for m in map(_unwrap_model, typing.get_args(tp)) if m is not None]
        return models[0] if len(models) == 1 and len([a for a in typing.get_args(tp) if a is not type(None)]) == 1 else None
    return None
