"""Property test: mutated configs either load or raise tunecell's own ConfigError, always with a place.

Mutations start from the four dialect fixtures and the tones example: drop, rename (typo or suffix), retype and
insert keys in the parsed tree (given back as YAML text, JSON text or a dict), and break the text itself (delete or
insert a character, change a line's indentation, duplicate or drop a line).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tunecell.config import WorkflowConfig, load_config
from tunecell.errors import ConfigError

CONFIGS = Path(__file__).parent / "configs"

EXAMPLE_YAML = (Path(__file__).parent / "configs" / "example.yaml").read_text()  # the example of issue 4

TEXTS = [(CONFIGS / name).read_text(encoding="utf-8")
         for name in ("cookbook.json", "params_config.json", "olive013.json", "tunecell.yaml")] + [EXAMPLE_YAML]
TREES = [yaml.safe_load(text) for text in TEXTS]

FUZZ = settings(max_examples=500, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10, 10**6), st.floats(allow_nan=False, width=32),
                    st.text(max_size=12))
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=3), st.dictionaries(st.text(max_size=8), SCALARS, max_size=3))
KEY_TEXT = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_0123456789", min_size=1, max_size=14)
TEXT_CHARS = st.sampled_from(list(":{}[]-,'\"#\t\n ") + ["a", "Z", "0", "."])


def _check(source: Any) -> None:
    """The property: a WorkflowConfig, or a ConfigError that names a key path or a line."""
    try:
        config = load_config(source)
    except ConfigError as e:
        assert e.path or e.line is not None, f"ConfigError without a place: {e}"
        assert e.message.strip(), "ConfigError with an empty message"
        str(e)  # formats
    else:
        assert isinstance(config, WorkflowConfig)


def _containers(tree: Any, path: tuple = ()) -> list[tuple]:
    """Every path to a dict or a list inside ``tree`` (the root included)."""
    out = [path] if isinstance(tree, (dict, list)) and (tree or path) else []
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    for key, value in items:
        out += _containers(value, path + (key,))
    return out


def _at(tree: Any, path: tuple) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def _typo(draw, key: str) -> str:
    if len(key) < 2:
        return key + "x"
    i = draw(st.integers(0, len(key) - 2))
    kind = draw(st.sampled_from(["swap", "drop", "double", "suffix"]))
    if kind == "swap":
        return key[:i] + key[i + 1] + key[i] + key[i + 2:]
    if kind == "drop":
        return key[:i] + key[i + 1:]
    if kind == "double":
        return key[:i] + key[i] + key[i:]
    return key + draw(st.sampled_from(["s", "_", "2", "_x"]))


def _replace_key(d: dict, old: Any, new: Any) -> None:
    items = [(new if k == old else k, v) for k, v in d.items()]
    d.clear()
    d.update(items)


@st.composite
def mutated_trees(draw) -> tuple[Any, str]:
    tree = copy.deepcopy(draw(st.sampled_from(TREES)))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_containers(tree)))
        node = _at(tree, path)
        op = draw(st.sampled_from(["drop", "rename", "retype", "insert"]))
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        if op == "insert" or not keys:
            if isinstance(node, dict):
                node[draw(KEY_TEXT)] = draw(VALUES)
            else:
                node.insert(draw(st.integers(0, len(node))), draw(VALUES))
            continue
        key = draw(st.sampled_from(keys))
        if op == "drop":
            del node[key]
        elif op == "retype":
            node[key] = draw(VALUES)
        elif isinstance(node, dict) and isinstance(key, str):
            new = _typo(draw, key)
            if new not in node:
                _replace_key(node, key, new)
    form = draw(st.sampled_from(["yaml", "json", "dict"]))
    return tree, form


@FUZZ
@given(mutated_trees())
def test_mutated_trees_load_or_raise_config_error(case):
    tree, form = case
    if form == "yaml":
        _check(yaml.safe_dump(tree, sort_keys=False, allow_unicode=True))
    elif form == "json":
        _check(json.dumps(tree, indent=2, ensure_ascii=False))
    else:
        _check(tree)


@st.composite
def broken_texts(draw) -> str:
    text = draw(st.sampled_from(TEXTS))
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["delete", "insert", "indent", "dedent", "dup_line", "drop_line"]))
        if op in ("delete", "insert"):
            i = draw(st.integers(0, max(len(text) - 1, 0)))
            text = text[:i] + text[i + 1:] if op == "delete" else text[:i] + draw(TEXT_CHARS) + text[i:]
            continue
        lines = text.split("\n")
        i = draw(st.integers(0, len(lines) - 1))
        if op == "indent":
            lines[i] = draw(st.sampled_from([" ", "  ", "\t"])) + lines[i]
        elif op == "dedent":
            lines[i] = lines[i][draw(st.integers(1, 4)):] if lines[i][:1] == " " else lines[i]
        elif op == "dup_line":
            lines.insert(i, lines[i])
        else:
            del lines[i]
        text = "\n".join(lines)
    return text


@FUZZ
@given(broken_texts())
def test_broken_texts_load_or_raise_config_error(text):
    _check(text)


def test_unmutated_sources_load():
    for text, tree in zip(TEXTS, TREES):
        load_config(text)
        load_config(tree)
