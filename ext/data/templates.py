"""From a row to the text the model trains on, and the prompt part of that text (for loss masking and evaluation).

- ``text_template``: Python ``str.format`` with fields naming columns (``{phrase}``; literal braces doubled), as Olive.
- ``text_cols``: the columns' values joined with one space, as Olive does.
- ``use_chat_template``: the tokenizer's own chat template over a ``messages`` column (role/content), a
  ``conversations`` column (ShareGPT from/value), or ``user``/``assistant`` (and optional ``system``) columns.

The prompt is the part before the answer: with ``response_template``, the text up to and including its first
occurrence; otherwise, for a template, the text before the answer field (``label_column``, else the template's last
field); for ``text_cols``, everything before the last column; for chat, the conversation up to the assistant's
last turn (with the generation prompt).
"""
from __future__ import annotations

import re
import string
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Optional, Sequence

from ..config.schema import PreProcessDataConfig
from ..errors import DataError

TEXT_COLS_JOINER = " "
CHAT_COLUMNS = ("messages", "conversations")
_FIELD_BASE = re.compile(r"^[^.\[]*")
_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                   "model": "assistant", "bot": "assistant", "system": "system", "tool": "tool"}


@dataclass(frozen=True)
class Rendered:
    text: str
    prompt: Optional[str] = None  # the text before the answer (None: no prompt part known or needed)


class Template:
    """A parsed str.format template. ``fields`` are the column names it uses, in order of first use."""

    _formatter = string.Formatter()

    def __init__(self, source: str):
        try:
            pieces = list(self._formatter.parse(source))
        except ValueError as e:
            raise DataError(f"text_template cannot be read: {e}",
                            hint="fields are {column}; write a literal brace as {{ or }}") from None
        self.source = source
        self.pieces = pieces  # (literal, field or None, spec, conversion)
        fields: list[str] = []
        for _, field, spec, _ in pieces:
            if field is None:
                continue
            base = _FIELD_BASE.match(field).group(0)
            if base == "" or base.isdigit():
                raise DataError(f"text_template field {{{field}}} does not name a column",
                                hint="name a column in every field, e.g. {phrase}; write a literal brace as {{ or }}")
            if base not in fields:
                fields.append(base)
            if spec and "{" in spec:
                for _, inner, _, _ in self._formatter.parse(spec):
                    if inner is not None:
                        inner_base = _FIELD_BASE.match(inner).group(0)
                        if inner_base and inner_base not in fields:
                            fields.append(inner_base)
        self.fields = fields

    @classmethod
    @lru_cache(maxsize=64)
    def parse(cls, source: str) -> "Template":
        return cls(source)

    def answer_piece(self, label_column: Optional[str] = None) -> Optional[int]:
        """Index of the piece holding the answer field: the last use of label_column, else the last field."""
        last = None
        for i, (_, field, _, _) in enumerate(self.pieces):
            if field is None:
                continue
            if label_column is None or _FIELD_BASE.match(field).group(0) == label_column:
                last = i
        return last

    def has_prompt(self, label_column: Optional[str] = None) -> bool:
        k = self.answer_piece(label_column)
        return k is not None and (k > 0 or bool(self.pieces[k][0]))

    def render(self, row: dict, split_at: Optional[int] = None) -> tuple[str, Optional[str]]:
        """The formatted text, and the text before piece `split_at`'s field (when given)."""
        out: list[str] = []
        prompt = None
        for i, (literal, field, _, _) in enumerate(self.pieces):
            out.append(literal)
            if field is None:
                continue
            if i == split_at:
                prompt = "".join(out)
            out.append(self.format_field(i, row))
        return "".join(out), prompt

    def text_after(self, index: int) -> str:
        """The literal text right after piece `index`'s field ("." in "... {tone}."), up to the next field."""
        return self.pieces[index + 1][0] if index + 1 < len(self.pieces) else ""

    def format_field(self, index: int, row: dict) -> str:
        """Piece `index`'s field as the text shows it: with its conversion and format spec ({stars:.0f})."""
        _, field, spec, conversion = self.pieces[index]
        obj, _ = self._formatter.get_field(field, (), row)
        obj = self._formatter.convert_field(obj, conversion)
        if spec and "{" in spec:
            spec = self._formatter.vformat(spec, (), row)
        return self._formatter.format_field(obj, spec or "")


def masking(pre: PreProcessDataConfig) -> bool:
    """Whether labels are -100 on the prompt part: train_on_prompt false, or a response_template."""
    return (not pre.train_on_prompt) or pre.response_template is not None


def text_source(pre: PreProcessDataConfig, columns: Optional[Sequence[str]] = None) -> str:
    """'template', 'cols', 'chat' or 'default' (no text option given: the 'text' column, as Olive)."""
    if pre.use_chat_template:
        return "chat"
    if pre.text_template is not None:
        return "template"
    if pre.text_cols is not None:
        return "cols"
    return "default"


def text_columns(pre: PreProcessDataConfig) -> list[str]:
    """The columns joined by text_cols (default: ["text"], as Olive)."""
    return list(pre.text_cols) if pre.text_cols is not None else ["text"]


def chat_columns(columns: Sequence[str]) -> list[str]:
    for name in CHAT_COLUMNS:
        if name in columns:
            return [name]
    if "user" in columns and "assistant" in columns:
        return ["user", "assistant"]
    return []


def needed_columns(pre: PreProcessDataConfig, columns: Sequence[str]) -> list[tuple[str, str]]:
    """(column, what uses it) for every column the rendering needs."""
    out: list[tuple[str, str]] = []
    source = text_source(pre)
    if source == "template":
        out += [(f, "text_template field") for f in Template.parse(pre.text_template).fields]
    elif source in ("cols", "default"):
        out += [(c, "text_cols column" if source == "cols" else "text column (no text_template or text_cols given)")
                for c in text_columns(pre)]
    else:
        found = chat_columns(columns)
        if not found:
            raise DataError(f"use_chat_template needs a 'messages' or 'conversations' column, or 'user' and "
                            f"'assistant' columns (columns: {', '.join(columns) or 'none'})")
        out += [(c, "chat column") for c in found]
    if pre.label_column and all(c != pre.label_column for c, _ in out):
        out.append((pre.label_column, "label_column"))
    return out


def chat_messages(row: dict) -> list[dict]:
    """The row's conversation as [{role, content}, ...]."""
    for column in ("messages", "conversations"):
        turns = row.get(column) or []
        bad = next((i for i, m in enumerate(turns) if not isinstance(m, dict)), None)
        if bad is not None:
            raise DataError(f"{column} item {bad + 1} is {'null' if turns[bad] is None else repr(turns[bad])}, not a "
                            "message", column=column, hint='each message is an object: {"role": ..., "content": ...}')
    if "messages" in row and row["messages"] is not None:
        return [{"role": m.get("role"), "content": m.get("content")} for m in row["messages"]]
    if "conversations" in row and row["conversations"] is not None:
        return [{"role": _SHAREGPT_ROLES.get(str(m.get("from", m.get("role"))).lower(), m.get("from")),
                 "content": m.get("value", m.get("content"))} for m in row["conversations"]]
    messages = []
    if row.get("system"):
        messages.append({"role": "system", "content": row["system"]})
    messages += [{"role": "user", "content": row["user"]}, {"role": "assistant", "content": row["assistant"]}]
    return messages


def render(row: dict, pre: PreProcessDataConfig, tokenizer: Any = None) -> Rendered:
    """The text the model trains on for one row, and its prompt part (when masking or a label column needs it)."""
    source = text_source(pre)
    want_prompt = masking(pre) or pre.label_column is not None
    if source == "chat":
        if tokenizer is None:
            raise DataError("use_chat_template needs the model's tokenizer")
        messages = chat_messages(row)
        try:
            text = tokenizer.apply_chat_template(messages, tokenize=False)
        except Exception as e:
            raise DataError(f"the tokenizer's chat template failed on this conversation: {e}",
                            hint="does the tokenizer have a chat_template, and are roles user/assistant/system?") \
                from None
        prompt = None
        if want_prompt and pre.response_template is None:
            prompt = _chat_prompt(messages, text, tokenizer)
    elif source == "template":
        template = Template.parse(pre.text_template)
        split_at = template.answer_piece(pre.label_column) if want_prompt and pre.response_template is None else None
        try:
            text, prompt = template.render(row, split_at)
        except (KeyError, IndexError, AttributeError) as e:
            raise DataError(f"text_template field {e} is not a column (columns: {', '.join(row)})") from None
        except (ValueError, TypeError) as e:
            raise DataError(f"text_template cannot format this row: {e}") from None
    else:
        values = [_text(row[c], c) for c in text_columns(pre)]
        text = TEXT_COLS_JOINER.join(values)
        prompt = None
        if want_prompt and pre.response_template is None:
            if pre.label_column and pre.label_column in text_columns(pre):
                k = text_columns(pre).index(pre.label_column)
            else:
                k = len(values) - 1
            prompt = TEXT_COLS_JOINER.join(values[:k]) + (TEXT_COLS_JOINER if k else "")
    if pre.response_template is not None:
        at = text.find(pre.response_template)
        if at < 0:
            raise DataError(f"response_template {pre.response_template!r} is not in the rendered text",
                            hint="the response_template must appear in every sample, e.g. '### The tone is:\\n'")
        prompt = text[:at + len(pre.response_template)]
    return Rendered(text, prompt)


def _text(value: Any, column: str) -> str:
    if value is None:
        raise DataError("missing value (null)", column=column)
    return value if isinstance(value, str) else str(value)


def _chat_prompt(messages: list[dict], text: str, tokenizer: Any) -> Optional[str]:
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
    if last is None:
        return None
    try:
        prompt = tokenizer.apply_chat_template(messages[:last], tokenize=False, add_generation_prompt=True)
        if text.startswith(prompt):
            return prompt
    except Exception:
        pass
    content = messages[last]["content"] or ""
    at = text.rfind(content) if content else -1
    return text[:at] if at >= 0 else None


def check_prompt_template(pre: PreProcessDataConfig) -> None:
    """Masking needs a prompt part: fail early (not per row) when the config cannot have one."""
    if not masking(pre) or pre.response_template is not None:
        return
    source = text_source(pre)
    if source == "template" and not Template.parse(pre.text_template).has_prompt(pre.label_column):
        raise DataError("train_on_prompt: false needs a prompt before the answer, but the answer field is the whole "
                        f"text_template {pre.text_template!r}",
                        hint="write the prompt into text_template (e.g. '### Text: {phrase}\\n### The tone is:\\n"
                             "{tone}'), or give a response_template")
    if source in ("cols", "default") and len(text_columns(pre)) < 2:
        raise DataError("train_on_prompt: false needs a prompt before the answer, but text_cols has one column",
                        hint="use a text_template with the answer as its last field, or a response_template")


def eval_examples(rows: Any, pre: PreProcessDataConfig, label_column: str) -> list[tuple[str, str]]:
    """(prompt, label) pairs for accuracy: the template rendered up to the label field, and the label as the
    template renders it (what the model trains to answer: "5" for a float 5.0 in {stars:.0f})."""
    if text_source(pre) != "template":
        raise DataError("accuracy evaluation needs a text_template whose last part is the label field "
                        f"{{{label_column}}}")
    template = Template.parse(pre.text_template)
    if label_column not in template.fields:
        raise DataError(f"label_column {label_column!r} is not a field of text_template {pre.text_template!r} "
                        f"(fields: {', '.join(template.fields) or 'none'})", column=label_column)
    split_at = template.answer_piece(label_column)
    out = []
    for i, row in enumerate(iter_rows(rows)):
        label = row.get(label_column)
        if label is None:
            raise DataError("missing label (null)", row=i + 1, column=label_column)
        _, prompt = template.render(row, split_at)
        out.append((prompt, template.format_field(split_at, row)))
    return out


def after_label(pre: PreProcessDataConfig, label_column: str) -> str:
    """The text training puts after each label (before its eos): the template's literal text after the label field.
    Scoring a label scores it too: after "Sad", a model trained on "Sad." expects ".", not the end of text."""
    template = Template.parse(pre.text_template)
    return template.text_after(template.answer_piece(label_column))


def iter_rows(rows: Any):
    """Rows of a datasets.Dataset, an Arrow table, or a list of dicts, as dicts."""
    if isinstance(rows, list):
        return iter(rows)
    to_pylist = getattr(rows, "to_pylist", None)  # pyarrow.Table
    if to_pylist is not None:
        return iter(to_pylist())
    to_list = getattr(rows, "to_list", None)  # datasets.Dataset
    if to_list is not None:
        return iter(to_list())
    return iter(rows)
