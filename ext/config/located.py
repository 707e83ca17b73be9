"""YAML/JSON parsed into dicts and lists that remember where each key sat in the text."""
from __future__ import annotations

import json
import re
from typing import Any, Optional

import yaml

from ..errors import ConfigError

Position = tuple  # 1-based line and column, then the name of the text when another is laid over it (labelled)


class LocatedDict(dict):
    """A dict that knows the position of each of its keys (``key_pos``) and of itself (``pos``)."""

    def __init__(self, *args: Any, pos: Optional[Position] = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.pos = pos
        self.key_pos: dict[Any, Position] = {}

    def move(self, old: Any, new: Any) -> None:
        """Rename a key in place, keeping its position and its place in the key order."""
        items = [(new if k == old else k, v) for k, v in self.items()]
        if old in self.key_pos:
            self.key_pos[new] = self.key_pos.pop(old)
        self.clear()
        self.update(items)

    def put(self, key: Any, value: Any, pos: Optional[Position]) -> None:
        """Set a key at ``pos``: a key laid over another (a cell's over its -f file's) is where it was written last,
        nowhere when that was a dict."""
        self[key] = value
        if pos is None:
            self.key_pos.pop(key, None)
        else:
            self.key_pos[key] = pos


class LocatedList(list):
    def __init__(self, *args: Any, pos: Optional[Position] = None):
        super().__init__(*args)
        self.pos = pos
        self.item_pos: list[Optional[Position]] = []


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads 1e-4 as a float (YAML 1.2), as people who paste JSON expect.

    Unquoted dates stay strings (YAML 1.2 has no timestamps): 2024-13-45 is not an error, and a revision or a
    folder name written as a date reaches the schema as the text the user wrote.
    """


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def parse_text(text: str) -> Any:
    """Parse YAML or JSON into Located containers. Syntax errors become a ConfigError with the line."""
    if text.lstrip().startswith("{"):
        try:
            json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"invalid JSON: {e.msg}", line=e.lineno, column=e.colno,
                              hint="check commas and quotes near that line (JSON allows no trailing commas)") from None
        # Valid JSON: a tab can only be whitespace between tokens, which YAML's flow style refuses. One space for
        # one tab keeps every line and column where it was.
        text = text.replace("\t", " ")
    try:
        loader = _Loader(text)
    except yaml.reader.ReaderError as e:  # a control character: it has a character offset, not a mark
        before = text[:e.position]
        raise ConfigError(f"invalid YAML: character {chr(e.character)!r} is not allowed in a config",
                          line=before.count("\n") + 1, column=e.position - (before.rfind("\n") + 1) + 1,
                          hint="remove it (it may have come with a copy and paste)") from None
    try:
        node = loader.get_single_node()
        return _build(loader, node) if node is not None else None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        problem = e.problem or str(e)
        hint = "indent with spaces, not tabs" if "'\\t'" in problem or "tab" in problem.lower() else \
            "check the indentation and the ':' after each key; quote values that contain ': ' or '#'"
        raise ConfigError(f"invalid YAML: {problem}", line=mark.line + 1 if mark else None,
                          column=mark.column + 1 if mark else None, hint=hint) from None
    finally:
        loader.dispose()


def _pos(node: yaml.Node) -> Position:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _build(loader: _Loader, node: yaml.Node, path: tuple = ()) -> Any:
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        out = LocatedDict(pos=_pos(node))
        for key_node, value_node in node.value:
            # Keys are names: `on:` or `1:` is the key 'on' or '1' (YAML 1.1 would make them True and 1).
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) and \
                key_node.tag != "tag:yaml.org,2002:merge" else _construct(loader, key_node, path)
            if not isinstance(key, (str, int, float, bool)):
                raise ConfigError("a key must be a plain name", path=path, line=_pos(key_node)[0],
                                  column=_pos(key_node)[1])
            if key in out:
                raise ConfigError(f"{key!r} is given twice in the same mapping", path=path + (key,),
                                  line=_pos(key_node)[0], column=_pos(key_node)[1], hint="remove one of the two")
            out.put(key, _build(loader, value_node, path + (key,)), _pos(key_node))
        return out
    if isinstance(node, yaml.SequenceNode):
        out_list = LocatedList(pos=_pos(node))
        for i, item in enumerate(node.value):
            out_list.append(_build(loader, item, path + (_node_label(item, i),)))
            out_list.item_pos.append(_pos(item))
        return out_list
    return _construct(loader, node, path)


def _construct(loader: _Loader, node: yaml.Node, path: tuple) -> Any:
    """A scalar (or an explicitly tagged value): a value YAML cannot build (!!int x) is an error with its line."""
    try:
        return loader.construct_object(node, deep=True)
    except yaml.MarkedYAMLError:
        raise
    except (ValueError, TypeError, AttributeError, OverflowError) as e:
        raise ConfigError(f"invalid YAML value {node.value!r} for tag {node.tag}: {e}", path=path,
                          line=_pos(node)[0], column=_pos(node)[1], hint="remove the !!tag or fix the value") from None


def _node_label(node: yaml.Node, index: int) -> Any:
    """The label locate() gives a list item: its name when it is a mapping with a plain name, else its index."""
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == "name" and \
                    isinstance(value_node, yaml.ScalarNode) and value_node.tag == "tag:yaml.org,2002:str":
                return value_node.value
    return index


def labelled(tree: Any, name: str) -> None:
    """Give every position in ``tree`` the name of its text, which errors then show: a config laid over another
    (load_config's base) has two texts whose line numbers would otherwise look alike."""
    if isinstance(tree, LocatedDict):
        tree.key_pos = {key: pos[:2] + (name,) for key, pos in tree.key_pos.items()}
        children: Any = tree.values()
    elif isinstance(tree, LocatedList):
        tree.item_pos = [pos and pos[:2] + (name,) for pos in tree.item_pos]
        children = tree
    else:
        return
    tree.pos = tree.pos and tree.pos[:2] + (name,)
    for child in children:
        labelled(child, name)


def locate(tree: Any, path: tuple) -> tuple[tuple, Optional[Position]]:
    """Follow ``path`` (as pydantic reports it) through the tree.

    Returns the path cleaned of pydantic's union-member segments, and the position of the deepest part of it
    found in the text (the key itself when it exists, else its parent).
    """
    clean: list = []
    pos = getattr(tree, "pos", None)
    node = tree
    for seg in path:
        if isinstance(node, LocatedDict):
            if seg in node:
                clean.append(seg)
                pos = node.key_pos.get(seg, pos)
                node = node[seg]
                continue
            if node.get("type") == seg or _is_union_tag(seg):
                continue  # a discriminator or union-member segment, not a key
            clean.append(seg)
            node = None
        elif isinstance(node, LocatedList) and isinstance(seg, int) and 0 <= seg < len(node):
            clean.append(_list_label(node[seg], seg))
            pos = node.item_pos[seg] if seg < len(node.item_pos) else pos
            node = node[seg]
        elif node is None or not _is_union_tag(seg):
            clean.append(seg)
            node = None
    return tuple(clean), pos


def _is_union_tag(seg: Any) -> bool:
    return isinstance(seg, str) and (seg[:1].isupper() or "[" in seg or seg in ("str", "int", "float", "bool"))


def _list_label(item: Any, index: int) -> Any:
    """data_configs entries are named: show `data_configs.tones` rather than `data_configs.0`."""
    return item["name"] if isinstance(item, dict) and isinstance(item.get("name"), str) else index
