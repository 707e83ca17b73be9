"""Write changed pre_process_data_config values back into config text, so that the notebook stays the record.

When the preview was given config text (YAML or JSON), the text is edited in place: only the changed values are
replaced (or added, or removed), and everything else, comments and key order included, stays as the user wrote it.
The edited text is then loaded again to check it says what the widget shows. When that cannot be done (the config
was a Python object, or the text has a shape the editor does not follow), the whole config is written as YAML.
"""
from __future__ import annotations

import json
import re
from typing import Any, Mapping, Optional

import yaml

# current key -> the Olive names that mean the same (the loader maps them)
ALIASES = {"max_seq_len": ("source_max_len",), "strategy": ("corpus_strategy",)}
_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-./]*$")
_YAML_WORDS = {"true", "false", "yes", "no", "on", "off", "null", "none", "~", "y", "n"}


class _EditFailed(Exception):
    pass


def write_config(source: Any, data_config_name: str, changes: Mapping[str, Any],
                 namespace: Optional[Mapping[str, Any]] = None) -> str:
    """New config text with `changes` applied to data config `data_config_name`'s pre_process_data_config.

    source: the original config text, or a WorkflowConfig / DataConfig. A value of None removes the key.
    """
    changes = dict(changes)
    if changes.get("text_template") is not None:  # one text source only
        changes.setdefault("text_cols", None)
        changes.setdefault("use_chat_template", None)
    if isinstance(source, str):
        try:
            text = edit_text(source, data_config_name, changes)
            if _check(text, data_config_name, changes, namespace):
                return text
        except _EditFailed:
            pass
        from tunecell.config import load_config
        source = load_config(source, namespace)
    return dump_config(source, data_config_name, changes)


# ------------------------------------------------------------------------------------------ in place
def edit_text(text: str, data_config_name: str, changes: Mapping[str, Any]) -> str:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        raise _EditFailed(str(e)) from None
    if not isinstance(root, yaml.MappingNode):
        raise _EditFailed("not a mapping")
    dc = _find_data_config(root, data_config_name)
    edits: list[tuple[int, int, str]] = []
    pre = _value(dc, "pre_process_data_config")
    legacy = _value(dc, "params_config")  # Olive 0.5: params_config.component_kwargs.pre_process_data
    if pre is None and isinstance(legacy, yaml.MappingNode):
        kwargs = _value(legacy, "component_kwargs")
        pre = _value(kwargs, "pre_process_data") if isinstance(kwargs, yaml.MappingNode) else None
        if pre is None:
            raise _EditFailed("params_config without component_kwargs.pre_process_data")
    if pre is None:
        additions = {k: v for k, v in changes.items() if v is not None}
        if additions:
            edits.append(_insert_section(text, dc, "pre_process_data_config", additions))
        return _apply(text, edits)
    if not isinstance(pre, yaml.MappingNode):
        raise _EditFailed("pre_process_data_config is not a mapping")
    params = _value(pre, "params")
    if isinstance(params, yaml.MappingNode):
        pre = params
    for key, value in changes.items():
        found = _key(pre, key, *ALIASES.get(key, ()))
        if found is None:
            if value is not None:
                edits.append(_insert(text, pre, key, value))
            continue
        key_node, value_node = found
        if value is None:
            edits.append(_remove(text, pre, key_node, value_node))
        else:
            start, end = value_node.start_mark.index, value_node.end_mark.index
            new = _scalar(value, pre.flow_style, value_node, text, key_node.start_mark.column)
            if text[start:end].endswith("\n") and not new.endswith("\n"):  # a block scalar ends with its newline
                new += "\n"
            edits.append((start, end, new))
    return _apply(text, edits)


def _apply(text: str, edits: list[tuple[int, int, str]]) -> str:
    for start, end, new in sorted(edits, reverse=True):
        text = text[:start] + new + text[end:]
    return text


def _key(mapping: yaml.MappingNode, *names: str):
    for key_node, value_node in mapping.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.value in names:
            return key_node, value_node
    return None


def _value(mapping: yaml.MappingNode, name: str):
    found = _key(mapping, name)
    return found[1] if found else None


def _find_data_config(root: yaml.MappingNode, name: str) -> yaml.MappingNode:
    configs = _value(root, "data_configs")
    if isinstance(configs, yaml.SequenceNode):
        for item in configs.value:
            if isinstance(item, yaml.MappingNode):
                n = _value(item, "name")
                if isinstance(n, yaml.ScalarNode) and n.value == name:
                    return item
    elif isinstance(configs, yaml.MappingNode):  # Olive < 0.6: name -> config
        item = _value(configs, name)
        if isinstance(item, yaml.MappingNode):
            return item
    elif _value(root, "load_dataset_config") is not None:  # the text is one data config
        return root
    raise _EditFailed(f"data config {name!r} not found")


def _scalar(value: Any, flow: bool, old: Optional[yaml.Node], text: str, key_column: int) -> str:
    from tunecell.config.loader import literal_braces

    return literal_braces(_yaml_scalar(value, flow, old, text, key_column))


def _yaml_scalar(value: Any, flow: bool, old: Optional[yaml.Node], text: str, key_column: int) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return json.dumps(list(value))
    value = str(value)
    if flow:
        return json.dumps(value, ensure_ascii=False)
    if old is not None and getattr(old, "style", None) == "|" and "\n" in value and _block_ok(value):
        original = text[old.start_mark.index:old.end_mark.index]
        indent = " " * (key_column + 2)
        chomp = "" if value.endswith("\n") else "-"
        body = value[:-1] if value.endswith("\n") else value
        out = f"|{chomp}\n" + "\n".join(indent + line if line else "" for line in body.split("\n"))
        return out + ("\n" if original.endswith("\n") else "")
    if _PLAIN.match(value) and value.lower() not in _YAML_WORDS:
        return value
    return json.dumps(value, ensure_ascii=False)


def _block_ok(value: str) -> bool:
    return not value.startswith((" ", "\n")) and not value.endswith("\n\n") and "\t" not in value and \
        all(line == line.rstrip() for line in value.split("\n"))


def _end(node: yaml.Node) -> int:
    """Where a node's text ends. A block collection's own end mark lies past any comments that follow it: use the
    end of its last leaf instead."""
    if isinstance(node, yaml.MappingNode) and not node.flow_style and node.value:
        return _end(node.value[-1][1])
    if isinstance(node, yaml.SequenceNode) and not node.flow_style and node.value:
        return _end(node.value[-1])
    return node.end_mark.index


def _line_end(text: str, index: int) -> int:
    """Index just after the line break that ends the line holding `index` (or where a block value already ended)."""
    if index > 0 and text[index - 1] == "\n":
        return index
    at = text.find("\n", index)
    return len(text) if at < 0 else at + 1


def _insert(text: str, mapping: yaml.MappingNode, key: str, value: Any) -> tuple[int, int, str]:
    if mapping.flow_style:
        close = text.rfind("}", 0, mapping.end_mark.index)
        if close < 0:
            raise _EditFailed("flow mapping without a closing brace")
        sep = ", " if mapping.value else ""
        if mapping.value and "\n" in text[mapping.value[-1][1].end_mark.index:close]:
            line_start = text.rfind("\n", 0, mapping.value[-1][0].start_mark.index) + 1
            sep = ",\n" + text[line_start:mapping.value[-1][0].start_mark.index]
        last_end = mapping.value[-1][1].end_mark.index if mapping.value else close
        return last_end, last_end, f"{sep}{json.dumps(key)}: {_scalar(value, True, None, text, 0)}"
    if not mapping.value:
        raise _EditFailed("empty block mapping")
    column = mapping.value[0][0].start_mark.column
    at = _line_end(text, _end(mapping.value[-1][1]))
    prefix = "" if at == 0 or text[at - 1] == "\n" else "\n"
    return at, at, f"{prefix}{' ' * column}{key}: {_scalar(value, False, None, text, column)}\n"


def _insert_section(text: str, dc: yaml.MappingNode, section: str, values: Mapping[str, Any]) \
        -> tuple[int, int, str]:
    if dc.flow_style:
        close = text.rfind("}", 0, dc.end_mark.index)
        inner = ", ".join(f"{json.dumps(k)}: {_scalar(v, True, None, text, 0)}" for k, v in values.items())
        last_end = dc.value[-1][1].end_mark.index if dc.value else close
        return last_end, last_end, f"{', ' if dc.value else ''}{json.dumps(section)}: {{{inner}}}"
    column = dc.value[0][0].start_mark.column
    at = _line_end(text, _end(dc.value[-1][1]))
    prefix = "" if at == 0 or text[at - 1] == "\n" else "\n"
    lines = [f"{' ' * column}{section}:"] + [f"{' ' * (column + 2)}{k}: {_scalar(v, False, None, text, column + 2)}"
                                               for k, v in values.items()]
    return at, at, prefix + "\n".join(lines) + "\n"


def _remove(text: str, mapping: yaml.MappingNode, key_node: yaml.Node, value_node: yaml.Node) \
        -> tuple[int, int, str]:
    start, end = key_node.start_mark.index, _end(value_node)
    if mapping.flow_style:
        before = text[:start].rstrip()
        if before.endswith(","):
            return len(before) - 1, end, ""
        after = re.match(r"\s*,\s*", text[end:])
        if after:
            return start, end + after.end(), ""
        return start, end, ""
    line_start = text.rfind("\n", 0, start) + 1
    if text[line_start:start].strip():
        raise _EditFailed("key shares its line")
    return line_start, _line_end(text, end), ""


def _check(text: str, name: str, changes: Mapping[str, Any], namespace) -> bool:
    from tunecell.config import load_config
    try:
        config = load_config(text, namespace)
        pre = config.data_config(name).pre_process_data_config
    except Exception:
        return False
    for key, value in changes.items():
        have = getattr(pre, key, None)
        if value is None:
            if key == "use_chat_template":
                if have:
                    return False
            elif have is not None:
                return False
        elif have != value:
            return False
    return True


# ---------------------------------------------------------------------------------------- full dump
class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str):
    style = "|" if "\n" in value and _block_ok(value) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump_config(config: Any, data_config_name: str, changes: Mapping[str, Any]) -> str:
    """The whole config (a WorkflowConfig or a DataConfig) as YAML, with the changes applied."""
    from tunecell.config.schema import DataConfig

    tree = config.model_dump(mode="json", exclude_unset=True)
    if isinstance(config, DataConfig):
        dc = tree
        tree["name"] = config.name
    else:
        for name, p in (tree.get("passes") or {}).items():
            p.setdefault("type", config.passes[name].type)
        dc = next(d for d in tree.get("data_configs", []) if d.get("name") == data_config_name)
        dc.setdefault("load_dataset_config", config.data_config(data_config_name).load_dataset_config.model_dump(
            mode="json", exclude_unset=True))
    pre = dc.setdefault("pre_process_data_config", {})
    for key, value in changes.items():
        if value is None:
            pre.pop(key, None)
        else:
            pre[key] = value
    from tunecell.config.loader import literal_braces

    header = "# written by tunecell.preview (the whole config: comments of the original are not kept)\n"
    return header + literal_braces(yaml.dump(tree, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120))


