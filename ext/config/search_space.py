"""Candidate values (Olive's searchable values): a list where a pass option takes one value.

`precision: [int4, fp32]` on a ModelBuilder pass, `r: [8, 16]` on LoRA, `training_args: {learning_rate: [1e-4,
3e-4]}`, or Olive's `{olive_parameter_type: SearchParameter, type: Categorical, support: [8, 16]}`. They are taken out of the tree before validation (the first candidate stays in its place) and each
candidate is validated on its own, so errors keep their key path and line.
"""
from __future__ import annotations

import typing
from typing import Any, Optional

from pydantic import BaseModel

from ..errors import ConfigError
from .schema import bool_for_number

SearchSpace = dict[str, dict[str, list[Any]]]  # pass name -> dotted option -> candidate values


def extract(tree: dict, pass_models: dict[str, type[BaseModel]]) -> SearchSpace:
    space: SearchSpace = {}
    passes = tree.get("passes")
    for name, p in (passes.items() if isinstance(passes, dict) else ()):
        kind = p.get("type") if isinstance(p, dict) else None
        model = pass_models.get(kind) if isinstance(kind, str) else None
        if model is not None:
            found = _candidates(p, model, ())
            if found:
                space[name] = found
    return space


def _candidates(d: dict, model: type[BaseModel], prefix: tuple) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    for key, value in list(d.items()):
        field = model.model_fields.get(key)
        if field is None:
            continue
        if isinstance(value, dict) and value.get("olive_parameter_type") == "SearchParameter" and \
                value.get("type") == "Categorical" and isinstance(value.get("support"), list):
            value = value["support"]  # Olive's own form of a candidate list (its JSON export's, tunecell's too)
        nested = _model_of(field.annotation)
        if nested is not None and isinstance(value, dict):
            found.update(_candidates(value, nested, prefix + (key,)))
        elif isinstance(value, list) and value and _takes_one_value(field.annotation, value):
            if len(value) > 1:
                found[".".join(prefix + (key,))] = list(value)
            d[key] = value[0]
    return found


def _takes_one_value(annotation: Any, value: list) -> bool:
    """A list is a candidate list where the option holds a scalar, or a list of lists where it holds a list."""
    if _accepts_list(annotation):
        return all(isinstance(v, list) for v in value)
    return True


def _accepts_list(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (list, tuple, set):
        return True
    if origin is typing.Annotated:
        return _accepts_list(typing.get_args(annotation)[0])
    if origin is typing.Union:
        return any(_accepts_list(a) for a in typing.get_args(annotation))
    return False


def _model_of(annotation: Any) -> Optional[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def validate(space: SearchSpace, tree: dict, model_for: dict[str, type[BaseModel]]) -> None:
    """Check every candidate value with the pass's own model; a bad one names its key and index."""
    from pydantic import ValidationError

    for name, options in space.items():
        p = tree["passes"][name]
        for key, values in options.items():
            for i, value in enumerate(values):
                trial = _with(dict(p), key.split("."), value)
                try:
                    model_for[p["type"]].model_validate(trial)
                except ValidationError as e:
                    # any other error of the pass is left to the schema validation, which places it at its own key
                    parts = tuple(key.split("."))
                    message = next((text for loc, text in map(_placed, e.errors()) if loc[:len(parts)] == parts),
                                   None)
                    if message is not None:
                        raise ConfigError(f"candidate {value!r}: {message}",
                                          path=("passes", name) + parts + (i,)) from None


def _placed(error: dict) -> tuple[tuple[str, ...], str]:
    """A pydantic error of a pass as (the key path it is about, its message): the key of a list's item or a union's
    member starts with its option's; schema.Model's marker for a boolean given for a number names its key."""
    loc, message = tuple(map(str, error["loc"])), error["msg"]
    marker = bool_for_number(error)
    if marker is not None:
        loc, message = loc + (marker[0],), marker[1]
    return loc, message


def _with(d: dict, keys: list[str], value: Any) -> dict:
    if len(keys) == 1:
        d[keys[0]] = value
    else:
        d[keys[0]] = _with(dict(d.get(keys[0]) or {}), keys[1:], value)
    return d


def size(space: SearchSpace) -> int:
    n = 1
    for options in space.values():
        for values in options.values():
            n *= len(values)
    return n
