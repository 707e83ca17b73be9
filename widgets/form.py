"""The config form: the main settings of a workflow as fields, with the YAML, the plan and the cost beside them.

``config_form(config_or_text, namespace=None, on_apply=None)`` returns a ConfigForm. It edits the config as a tree
in tunecell's dialect (whatever dialect it was written in), one field per setting: the input model; per data config
the template, strategy, max_seq_len, eval split and prompt masking; per LoRA/QLoRA pass r, alpha, dropout, target
modules (the model's own linear layers, read on the meta device), learning rate (log slider), steps or epochs, batch
size and gradient accumulation; ModelBuilder precision and the execution provider; the evaluator's metric goals; the
target (local or a configured system).

Every change re-validates the whole config with the loader (load_config): each ConfigError is shown on the field its
key path names, in the loader's words. Beside the fields: the YAML the form produces (minimal: what differs from the
defaults), the plan, and the estimate (tunecell.estimate). Changes are debounced (one recompute per ~300 ms at most;
text fields send their value on Enter or blur, not per keystroke). "Apply" hands the YAML to ``on_apply`` (the magic
rewrites its cell with it); "Preview data" opens the sample preview on the current settings; "Calibrate" measures
the training step time on this machine.

Without ipywidgets (or where widgets cannot render) the form is a static summary: text/plain and text/html.
"""
from __future__ import annotations

import asyncio
import copy
import html
import math
import re
import typing
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence

import yaml

from tunecell.config import schema
from tunecell.errors import ConfigError

DEBOUNCE_S = 0.3
MISSING: Any = object()
LOCAL = "local"
GPU_SYSTEM = "local_gpu"  # the LocalSystem the form adds when a local run should use CUDA
GOAL_TYPES = ("none", "threshold", "min-improvement", "max-degradation")
MAX_ERRORS = 8  # validation rounds per change (one error per round: the loader reports the first)

BOX = "font-family:var(--jp-ui-font-family,system-ui,sans-serif);font-size:13px;line-height:1.4;"
PRE = ("white-space:pre-wrap;background:#f7f7f7;border:1px solid #e3e3e3;border-radius:4px;padding:6px 8px;"
       "margin:2px 0;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;")
ERROR = "color:#cf222e;font-size:12px;"
NOTE = "color:#57606a;font-size:12px;"


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


# ============================================================================================== the tree
def plain(value: Any) -> Any:
    """Located dicts and lists (the loader's) as plain ones."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def tree_path(tree: Any, labels: Sequence[Any]) -> Optional[tuple]:
    """A key path as ConfigError names it (list items by their ``name``) -> the path with list indices."""
    out, node = [], tree
    for seg in labels:
        if isinstance(node, dict):
            if seg not in node:
                return tuple(out) + tuple(labels[len(out):])
            out.append(seg)
            node = node[seg]
        elif isinstance(node, list):
            index = next((i for i, x in enumerate(node) if isinstance(x, dict) and x.get("name") == seg), None)
            if index is None and isinstance(seg, int) and 0 <= seg < len(node):
                index = seg
            if index is None:
                return None
            out.append(index)
            node = node[index]
        else:
            return None
    return tuple(out)


def get_in(tree: Any, path: Sequence[Any], default: Any = MISSING) -> Any:
    node = tree
    for seg in path:
        if isinstance(node, dict) and seg in node:
            node = node[seg]
        elif isinstance(node, list) and isinstance(seg, int) and 0 <= seg < len(node):
            node = node[seg]
        else:
            return default
    return node


def set_in(tree: Any, path: Sequence[Any], value: Any) -> None:
    node = tree
    for seg in path[:-1]:
        if isinstance(node, list):
            node = node[seg]
        else:
            if not isinstance(node.get(seg), (dict, list)):
                node[seg] = {}
            node = node[seg]
    node[path[-1]] = value


def del_in(tree: Any, path: Sequence[Any]) -> None:
    parent = get_in(tree, path[:-1], None)
    if isinstance(parent, dict):
        parent.pop(path[-1], None)


NAMED_LISTS = ("data_configs", "metrics")  # lists whose items a key path names (and the loader merges) by name


def get_labels(tree: Any, labels: Sequence[Any], default: Any = MISSING) -> Any:
    """The value at a ConfigError-style key path (list items by name), or ``default``."""
    path = tree_path(tree, labels)
    return default if path is None else get_in(tree, path, default)


def set_labels(tree: dict, labels: Sequence[Any], value: Any) -> None:
    """Set the value at a ConfigError-style key path, creating sections (and named list items) on the way."""
    node: Any = tree
    for i, seg in enumerate(labels[:-1]):
        if isinstance(node, list):
            item = next((x for x in node if isinstance(x, dict) and x.get("name") == seg), None)
            if item is None:
                item = node[seg] if isinstance(seg, int) and 0 <= seg < len(node) else None
            if item is None:
                item = {"name": seg}
                node.append(item)
            node = item
        else:
            if not isinstance(node.get(seg), (dict, list)):
                node[seg] = [] if seg in NAMED_LISTS else {}
            node = node[seg]
    node[labels[-1]] = value


def del_labels(tree: Any, labels: Sequence[Any]) -> None:
    path = tree_path(tree, labels)
    if path is not None:
        del_in(tree, path)


# ===================================================================================== schema -> field kinds
def _unwrap(tp: Any) -> tuple[Any, bool]:
    """(the type, optional?) with Annotated and Optional taken off."""
    optional = False
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin is typing.Union:
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            optional = optional or len(args) < len(typing.get_args(tp))
            if len(args) != 1:
                return tp, optional
            tp = args[0]
        else:
            return tp, optional


def schema_field(model: type, name: str) -> tuple[str, tuple, Any]:
    """(kind, options, default) of a schema field: a Literal is a choice, bool a checkbox, int and float numbers,
    an optional number a text field (empty = none), str a text field."""
    info = model.model_fields[name]
    tp, optional = _unwrap(info.annotation)
    default = None if info.is_required() else info.get_default(call_default_factory=True)
    if typing.get_origin(tp) is typing.Literal:
        return "choice", tuple(typing.get_args(tp)), default
    if tp is bool:
        return "bool", (), default
    if tp in (int, float):
        return ("optional_number" if optional else tp.__name__), (), default
    return "text", (), default


@dataclass
class Spec:
    """One field: its key (the ConfigError path, dotted), where it writes in the tree, and how it is edited."""

    key: str
    labels: tuple  # the ConfigError path this field reads, writes and owns (list items by name)
    label: str
    kind: str
    default: Any = None
    options: tuple = ()
    section: str = ""
    help: str = ""
    disabled: bool = False
    owns: tuple = ()  # further label paths whose errors show on this field (composite fields)


def _spec(model: type, name: str, labels: tuple, section: str, label: Optional[str] = None, **kwargs: Any) -> Spec:
    """A field generated from the schema: kind, options and default from ``model``'s field ``name``."""
    kind, options, default = schema_field(model, name)
    kwargs.setdefault("kind", kind)
    return Spec(".".join(map(str, labels)), labels, label or name, options=options, default=default,
                section=section, **kwargs)


def _custom(labels: tuple, label: str, kind: str, section: str, **kwargs: Any) -> Spec:
    return Spec(".".join(map(str, labels)), labels, label, kind, section=section, **kwargs)


def build_specs(tree: dict) -> list[Spec]:
    """The fields for a config tree (tunecell's dialect), section by section."""
    specs: list[Spec] = []
    model = tree.get("input_model") or {}
    specs.append(_custom(("input_model", "model_path"), "model", "text", "model",
                         disabled=isinstance(model.get("model_path"), dict),
                         help="a local folder, a .gguf file, or a Hugging Face name found in the local cache"))
    systems = tuple(tree.get("systems") or {})
    specs.append(_custom(("target",), "target", "target", "model", options=(LOCAL,) + systems, owns=(("host",),),
                         help="where the workflow runs: here, or a system of the config"))
    specs.append(Spec("execution_provider", ("systems",), "execution provider", "provider", options=("cpu", "cuda"),
                      section="model", help="the target's onnxruntime execution provider (ModelBuilder builds for it)"))
    passes = {n: p for n, p in (tree.get("passes") or {}).items() if isinstance(p, dict)}
    for i, dc in enumerate(tree.get("data_configs") or []):
        name = dc.get("name", i)
        section, at = f"data · {name}", ("data_configs", name, "pre_process_data_config")
        pre = dc.get("pre_process_data_config") or {}
        other = "text_cols" if pre.get("text_cols") else "use_chat_template" if pre.get("use_chat_template") else None
        specs.append(_spec(schema.PreProcessDataConfig, "text_template", at + ("text_template",), section, "template",
                           kind="textarea", disabled=other is not None,
                           help=f"the text comes from {other}" if other else
                           "{column} fields; the prompt is the text before the last field"))
        for key in ("strategy", "max_seq_len", "train_on_prompt"):
            specs.append(_spec(schema.PreProcessDataConfig, key, at + (key,), section,
                               help="off: loss on the answer only (the prompt is masked)"
                               if key == "train_on_prompt" else ""))
        for pname, p in passes.items():
            if p.get("type") in ("LoRA", "QLoRA") and p.get("train_data_config") == name:
                specs.append(_spec(schema.LoRA, "eval_dataset_size", ("passes", pname, "eval_dataset_size"), section,
                                   f"eval split ({pname})",
                                   help="rows held out for evaluation: a fraction below 1 or a row count; empty: none"))
    for pname, p in passes.items():
        kind = p.get("type")
        section, at = f"pass · {pname} ({kind})", ("passes", pname)
        if kind in ("LoRA", "QLoRA"):
            cls = schema.QLoRA if kind == "QLoRA" else schema.LoRA
            specs += [_spec(cls, key, at + (key,), section) for key in ("r", "alpha", "lora_dropout")]
            specs.append(_custom(at + ("target_modules",), "target_modules", "modules", section,
                                 help="the model's linear layers that get an adapter"))
            specs.append(_spec(cls, "torch_dtype", at + ("torch_dtype",), section))
            if kind == "QLoRA":
                specs += [_spec(cls, key, at + (key,), section) for key in ("quant_type", "double_quant",
                                                                              "compute_dtype")]
            ta = at + ("training_args",)
            specs.append(_spec(schema.TrainingArgs, "learning_rate", ta + ("learning_rate",), section, kind="logfloat"))
            specs.append(_custom(ta + ("max_steps",), "steps or epochs", "steps", section,
                                 owns=(ta + ("num_train_epochs",),),
                                 help="train for a number of optimizer steps, or of passes over the data"))
            for key, label in (("per_device_train_batch_size", "batch size"),
                               ("gradient_accumulation_steps", "gradient accumulation")):
                specs.append(_spec(schema.TrainingArgs, key, ta + (key,), section, label))
        elif kind == "ModelBuilder":
            specs += [_spec(schema.ModelBuilder, key, at + (key,), section) for key in ("precision", "int4_block_size")]
    evaluators = {n: e for n, e in (tree.get("evaluators") or {}).items() if isinstance(e, dict)}
    if evaluators:
        specs.append(_custom(("evaluator",), "evaluator", "evaluator", "evaluation",
                             options=("none",) + tuple(evaluators),
                             help="the evaluator that scores the input model and each pass's output"))
    for ev_name, ev in evaluators.items():
        for i, metric in enumerate(ev.get("metrics") or []):
            if not isinstance(metric, dict):
                continue
            mname = metric.get("name", i)
            what = str(metric.get("type", "?")) + (f" on {metric['data_config']}" if metric.get("data_config") else "")
            specs.append(_custom(("evaluators", ev_name, "metrics", mname, "goal"), f"{ev_name} · {mname} goal",
                                 "goal", "evaluation", help=f"metric {mname}: {what}"))
    return specs


# =================================================================================================== YAML
class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str):
    from .config_text import _block_ok

    style = "|" if "\n" in value and _block_ok(value) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


def _list(dumper: yaml.SafeDumper, value: list):
    flow = all(isinstance(x, (str, int, float, bool)) and not (isinstance(x, str) and "\n" in x) for x in value)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=flow and bool(value))


_Dumper.add_representer(str, _str)
_Dumper.add_representer(list, _list)


def dump_yaml(data: Any) -> str:
    """tunecell YAML: block layout, short lists inline, multi-line strings as | blocks; literal braces kept."""
    from tunecell.config.loader import literal_braces

    return literal_braces(yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120))


def minimal_yaml(config: schema.WorkflowConfig) -> str:
    from tunecell.config.export import minimal_dict

    return dump_yaml(_type_first(minimal_dict(config)))


def _type_first(value: Any) -> Any:
    """``name`` and ``type`` first in each section (export.minimal_dict adds ``type`` last): easier to read."""
    if isinstance(value, dict):
        head = [k for k in ("name", "type") if k in value]
        return {k: _type_first(value[k]) for k in head + [k for k in value if k not in head]}
    if isinstance(value, list):
        return [_type_first(v) for v in value]
    return value


# ============================================================================================= validation
def validate(tree: dict, *, overrides: Sequence[str] = (), base: Any = None) \
        -> tuple[Optional[schema.WorkflowConfig], list[ConfigError]]:
    """(the config or None, the errors). The loader stops at its first error: to find the others, the value it
    named is set aside (back to its default) and the config loaded again, a few rounds at most."""
    from tunecell.config import load_config

    errors: list[ConfigError] = []
    work = copy.deepcopy(tree)
    seen: set[tuple] = set()
    for _ in range(MAX_ERRORS):
        try:
            config = load_config(work, None, overrides, base=base)
        except ConfigError as e:
            errors.append(e)
            where = tree_path(work, e.path) if e.path else None
            value = get_in(work, where) if where else MISSING
            if where in seen or value is MISSING or isinstance(value, (dict, list)) and where[-1] != "target_modules":
                break  # a missing key or a whole section: setting it aside would only make up other errors
            seen.add(where)
            del_in(work, where)
            continue
        return (None if errors else config), errors
    return None, errors


# ================================================================================================ controls
class Control:
    """One field's widgets: ``get()`` the value for the config (MISSING: remove the key), ``put(value)``."""

    def __init__(self, spec: Spec, value: Any, form: "ConfigForm"):
        self.spec, self.form = spec, form
        self.widgets: list[Any] = []
        self._value = value
        self.build(value)

    # headless fallback: the value is kept as is
    def build(self, value: Any) -> None:
        pass

    def get(self) -> Any:
        return self._value

    def put(self, value: Any) -> None:
        self._value = value

    def observe(self, callback: Callable[[Any], None]) -> None:
        for w in self.widgets:
            w.observe(callback, names="value")


def _layout(width: str = "260px") -> Any:
    import ipywidgets as W

    return W.Layout(width=width)


STYLE = {"description_width": "150px"}


class SimpleControl(Control):
    def build(self, value: Any) -> None:
        import ipywidgets as W

        s, kind = self.spec, self.spec.kind
        common = dict(description=s.label, style=STYLE, disabled=s.disabled, description_tooltip=s.help or s.key)
        if kind == "int":
            w = W.IntText(value=_int_or(value, s.default), continuous_update=False, layout=_layout(), **common)
        elif kind == "float":
            w = W.FloatText(value=_float_or(value, s.default), continuous_update=False, layout=_layout(), **common)
        elif kind == "bool":
            w = W.Checkbox(value=bool(value), indent=False, layout=_layout("330px"), **common)
        elif kind in ("choice", "evaluator", "target", "provider"):
            options = list(s.options)
            if value not in options:
                options.append(value)  # an invalid value stays visible (its error shows below)
            w = W.Dropdown(options=[(str(o), o) for o in options], value=value, layout=_layout(), **common)
        elif kind == "textarea":
            w = W.Textarea(value="" if value is None else str(value), continuous_update=False,
                           layout=W.Layout(width="98%", height="56px"), **common)
        else:  # text, optional_number
            shown = "" if value is None else (value if isinstance(value, str) else yaml.safe_dump(value).strip()
                                              .removesuffix("\n...").strip())
            if kind == "text" and isinstance(value, dict):
                shown = ", ".join(f"{k}={v}" for k, v in value.items())
            w = W.Text(value=shown, continuous_update=False, placeholder="none" if kind == "optional_number" else "",
                       layout=_layout("98%" if kind == "text" else "260px"), **common)
        self.widget = w
        self.widgets = [w]

    def get(self) -> Any:
        kind, value = self.spec.kind, self.widget.value
        if kind == "optional_number":
            if not str(value).strip():
                return MISSING
            try:
                return yaml.safe_load(value)
            except yaml.YAMLError:
                return value
        if kind in ("text", "textarea") and value == "" and self.spec.key != "input_model.model_path":
            return MISSING
        return value

    def put(self, value: Any) -> None:
        kind = self.spec.kind
        if kind in ("text", "textarea", "optional_number"):
            self.widget.value = "" if value is None or value is MISSING else (
                value if isinstance(value, str) else yaml.safe_dump(value).strip().removesuffix("...").strip())
        elif kind in ("choice", "evaluator", "target", "provider"):
            if value not in [v for _, v in self.widget.options]:
                self.widget.options = list(self.widget.options) + [(str(value), value)]
            self.widget.value = value
        elif kind == "int":
            self.widget.value = _int_or(value, self.spec.default)
        elif kind == "float":
            self.widget.value = _float_or(value, self.spec.default)
        else:
            self.widget.value = bool(value)


def _int_or(value: Any, default: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return int(default or 0)


def _float_or(value: Any, default: Any) -> float:
    try:
        v = float(value)
        return v if math.isfinite(v) else float(default or 0)
    except (TypeError, ValueError):
        return float(default or 0)


class LogControl(Control):
    """The learning rate on a log slider (its readout can be typed into)."""

    def build(self, value: Any) -> None:
        import ipywidgets as W

        v = _float_or(value, self.spec.default)
        exponent = math.log10(v) if v > 0 else -7
        self.widget = W.FloatLogSlider(
            value=v if v > 0 else 10 ** -7, base=10, min=min(-7, math.floor(exponent) - 1),
            max=max(-1, math.ceil(exponent) + 1), step=0.05, readout_format=".2e", continuous_update=False,
            description=self.spec.label, style=STYLE, layout=_layout("420px"), description_tooltip=self.spec.key)
        self.widgets = [self.widget]

    def get(self) -> Any:
        return float(f"{self.widget.value:.3g}")  # what the readout shows: 3.0e-4, not 0.00029999999

    def put(self, value: Any) -> None:
        v = _float_or(value, self.spec.default)
        if v > 0:
            exponent = math.log10(v)
            self.widget.min, self.widget.max = min(self.widget.min, math.floor(exponent) - 1), \
                max(self.widget.max, math.ceil(exponent) + 1)
            self.widget.value = v


class ModulesControl(Control):
    """target_modules: all-linear, or a multi-select of the model's linear layers (plus any name typed in)."""

    def build(self, value: Any) -> None:
        import ipywidgets as W

        names = list(self.form.module_names or [])
        chosen = list(value) if isinstance(value, list) else []
        options = names + [c for c in chosen if c not in names]
        self.all_linear = W.Checkbox(value=value == "all-linear", description="all-linear", indent=False,
                                     layout=_layout("110px"))
        self.select = W.SelectMultiple(options=options, value=tuple(chosen), rows=min(max(len(options), 2), 8),
                                       disabled=value == "all-linear", layout=_layout("200px"),
                                       description_tooltip="the model's linear layers (lm_head left out)")
        self.extra = W.Text(placeholder="other names, comma-separated", continuous_update=False,
                            layout=_layout("200px"))
        self.label = W.HTML(f"<span title='{_e(self.spec.key)}'>target_modules</span>",
                            layout=W.Layout(width="150px"))
        self.box = W.HBox([self.label, W.VBox([self.all_linear, self.select, self.extra])])
        self.widgets = [self.all_linear, self.select, self.extra]

    def set_names(self, names: Sequence[str]) -> None:
        chosen = list(self.select.value)
        self.select.options = list(names) + [c for c in chosen if c not in names]
        self.select.value = tuple(chosen)
        self.select.rows = min(max(len(self.select.options), 2), 8)

    def get(self) -> Any:
        self.select.disabled = self.all_linear.value
        if self.all_linear.value:
            return "all-linear"
        extra = [x.strip() for x in self.extra.value.split(",") if x.strip()]
        if extra:
            self.select.options = list(self.select.options) + [x for x in extra if x not in self.select.options]
            chosen = list(self.select.value) + [x for x in extra if x not in self.select.value]
            self.extra.value = ""  # (fires again with nothing to add)
            self.select.value = tuple(chosen)
        chosen = list(self.select.value)
        return chosen if chosen else MISSING

    def put(self, value: Any) -> None:
        self.all_linear.value = value == "all-linear"
        chosen = list(value) if isinstance(value, list) else []
        missing = [c for c in chosen if c not in self.select.options]
        if missing:
            self.select.options = list(self.select.options) + missing
        self.select.value = tuple(chosen)


class StepsControl(Control):
    """max_steps, or num_train_epochs when max_steps is off (-1)."""

    def build(self, value: Any) -> None:
        import ipywidgets as W

        mode, steps, epochs = value
        self.mode = W.ToggleButtons(options=["steps", "epochs"], value=mode, style={"button_width": "60px"},
                                    description="train for", description_tooltip=self.spec.key)
        self.mode.style.description_width = "150px"
        self.steps = W.IntText(value=_int_or(steps, 100), continuous_update=False, layout=_layout("90px"))
        self.epochs = W.FloatText(value=_float_or(epochs, 1.0), continuous_update=False, layout=_layout("90px"))
        self._show()
        self.box = W.HBox([self.mode, self.steps, self.epochs])
        self.widgets = [self.mode, self.steps, self.epochs]

    def _show(self) -> None:
        self.steps.layout.display = "" if self.mode.value == "steps" else "none"
        self.epochs.layout.display = "" if self.mode.value == "epochs" else "none"

    def get(self) -> Any:
        self._show()
        return (self.mode.value, self.steps.value, self.epochs.value)

    def put(self, value: Any) -> None:
        mode, steps, epochs = value
        self.mode.value = mode
        if steps is not None:
            self.steps.value = _int_or(steps, 100)
        if epochs is not None:
            self.epochs.value = _float_or(epochs, 1.0)
        self._show()


class GoalControl(Control):
    def build(self, value: Any) -> None:
        import ipywidgets as W

        kind, amount = value
        options = list(GOAL_TYPES) + ([kind] if kind not in GOAL_TYPES else [])
        self.kind = W.Dropdown(options=options, value=kind, description=self.spec.label, style=STYLE,
                               layout=_layout("330px"), description_tooltip=self.spec.help or self.spec.key)
        self.amount = W.FloatText(value=_float_or(amount, 0.0), continuous_update=False, layout=_layout("90px"),
                                  disabled=kind == "none")
        self.box = W.HBox([self.kind, self.amount])
        self.widgets = [self.kind, self.amount]

    def get(self) -> Any:
        self.amount.disabled = self.kind.value == "none"
        return (self.kind.value, self.amount.value)

    def put(self, value: Any) -> None:
        kind, amount = value
        if kind not in self.kind.options:
            self.kind.options = list(self.kind.options) + [kind]
        self.kind.value = kind
        self.amount.value = _float_or(amount, 0.0)


CONTROLS = {"logfloat": LogControl, "modules": ModulesControl, "steps": StepsControl, "goal": GoalControl}


# ================================================================================================= a field
class FormField:
    """A field of the form: its spec, its control (widgets), its error (the loader's message) and note."""

    def __init__(self, spec: Spec, form: "ConfigForm"):
        self.spec, self.form = spec, form
        self.error = ""
        self.note = ""
        value = form._read(spec)
        if form.widgets:
            import ipywidgets as W

            cls = CONTROLS.get(spec.kind, SimpleControl)
            self.control = cls(spec, value, form)
            self.message = W.HTML()
            self.box = W.VBox([getattr(self.control, "box", None) or self.control.widgets[0], self.message],
                              layout=W.Layout(margin="0 0 2px 0"))
        else:
            self.control = Control(spec, value, form)
            self.message = None
            self.box = None

    @property
    def key(self) -> str:
        return self.spec.key

    @property
    def widget(self) -> Any:
        """The main input widget (None without ipywidgets)."""
        return self.control.widgets[0] if self.control.widgets else None

    @property
    def value(self) -> Any:
        return self.control.get()

    def show(self, error: str = "", note: str = "") -> None:
        self.error, self.note = error, note
        if self.message is not None:
            parts = []
            if error:
                parts.append(f'<div style="{ERROR}">⚠ {_e(error)}</div>')
            if note:
                parts.append(f'<div style="{NOTE}">{_e(note)}</div>')
            self.message.value = "".join(parts)


# ============================================================================================ the form
class ConfigForm:
    """A form over a workflow config. See the module docstring; ``config_form()`` builds one.

    State: ``tree`` (the config in tunecell's dialect, as the form edits it), ``config`` (the validated config, or
    None while a field is invalid), ``errors`` (field key -> the loader's message), ``yaml`` (what Apply writes),
    ``plan_text``, ``estimate`` (tunecell.estimate.Estimate). Edit with the widgets or ``set(key, value)``.
    """

    def __init__(self, source: Any, namespace: Optional[Mapping[str, Any]] = None,
                 on_apply: Optional[Callable[[str], Any]] = None, *, overrides: Sequence[str] = (),
                 base: Any = None, tokenizer: Any = None, widgets: bool = True, debounce: float = DEBOUNCE_S,
                 estimate: bool = True, title: str = "tunecell config"):
        from tunecell.config.loader import _tree

        tree, notes, base_dir = _tree(source, namespace)
        self.tree: dict = plain(tree)
        self._base_tree = _tree(base, namespace)[0] if base is not None else None
        self.notes = list(notes)
        if isinstance(source, str) and ("{{" in source or "{%" in source):
            self.notes.append("{{ }} placeholders were filled from the notebook: the form and Apply use the values")
        self.base_dir = str(base_dir) if base_dir else getattr(source, "base_dir", None)
        self.namespace, self.on_apply = namespace, on_apply
        self.overrides, self.base = list(overrides), base
        self.tokenizer = tokenizer
        self.title = title
        self.want_estimate = estimate
        self.debounce = debounce
        self.widgets = widgets and _has_widgets()
        self.config: Optional[schema.WorkflowConfig] = None  # valid now, or None
        self.last_valid: Optional[schema.WorkflowConfig] = None
        self.config_errors: list[ConfigError] = []
        self.errors: dict[str, str] = {}  # field key (or "" for the whole config) -> message
        self.yaml = ""
        self.plan_text = ""
        self.estimate: Any = None
        self.estimate_error: Optional[str] = None
        self.comparisons: list[Any] = []
        self.applied: Optional[str] = None
        self.recomputes = 0
        self._pending = False
        self._timer: Any = None
        self._syncing = self._quiet = self._writing = False
        self.model_error: Optional[str] = None
        self.module_names: Optional[list[str]] = None
        self._model_key: Optional[str] = None
        self._validate()
        self._load_module_names()
        self.specs = build_specs(self._merged())  # over a base: its sections too (edits go to the body)
        self.fields: dict[str, FormField] = {s.key: FormField(s, self) for s in self.specs}
        self.widget = self._build_widget() if self.widgets else None
        for f in self.fields.values():
            if self.widgets:
                f.control.observe(lambda change, f=f: self._on_change(f))
        self.refresh()

    # ---------------------------------------------------------------------------------- reading fields
    def _lookup(self, path: Sequence[Any], default: Any = MISSING) -> Any:
        """A value of the body, else of the config it is laid over (-f FILE, --from), else ``default``."""
        value = get_labels(self.tree, path)
        if value is MISSING and self._base_tree is not None:  # the body is laid over a base: show the base's
            value = get_labels(self._merged(), path)
        return default if value is MISSING else value

    def _merged(self) -> dict:
        """The body laid over the base, as the loader lays them (data configs and metrics by name)."""
        if self._base_tree is None:
            return self.tree
        from tunecell.config.loader import _overlay

        return plain(_overlay(copy.deepcopy(self._base_tree), copy.deepcopy(self.tree)))

    def _read(self, spec: Spec) -> Any:
        kind = spec.kind
        if kind == "target":
            return self._lookup(("target",), None) or LOCAL
        if kind == "provider":
            return self._provider()
        if kind == "steps":
            ta = spec.labels[:-1]
            steps = self._lookup(ta + ("max_steps",), -1)
            epochs = self._lookup(ta + ("num_train_epochs",), 1.0)
            try:
                mode = "steps" if int(steps) > 0 else "epochs"
            except (TypeError, ValueError):
                mode = "steps"
            return (mode, steps if mode == "steps" else 100, epochs)
        if kind == "goal":
            goal = self._lookup(spec.labels, None)
            if isinstance(goal, dict):
                return (goal.get("type", "threshold"), goal.get("value", 0.0))
            return ("none", 0.0)
        if kind == "evaluator":
            return self._lookup(spec.labels, None) or "none"
        if kind == "modules":
            return self._lookup(spec.labels, None)
        value = self._lookup(spec.labels, spec.default)
        return value

    def _provider(self) -> str:
        target = self._lookup(("target",), None)
        system = self._lookup(("systems", target), None) if target else None
        if not isinstance(system, dict):
            return "cpu"
        accelerators = system.get("accelerators") or []
        first = accelerators[0] if accelerators else None
        if isinstance(first, str):
            first = {"device": first}
        if not isinstance(first, dict):  # the system's default accelerator: a GPU on AzureML, the CPU here
            return "cuda" if system.get("type") == "AzureML" else "cpu"
        providers = first.get("execution_providers") or []
        if providers:
            return "cuda" if providers[0] == "CUDAExecutionProvider" else "cpu"
        return "cuda" if first.get("device") == "gpu" else "cpu"

    # ---------------------------------------------------------------------------------- writing fields
    def _write(self, f: FormField) -> None:
        spec, value = f.spec, f.value
        kind = spec.kind
        if kind == "target":
            systems = self.tree.get("systems") or {}
            if value == LOCAL:
                self.tree.pop("target", None)
                self.tree.pop("host", None)
            else:
                self.tree["target"] = value
                if (systems.get(value) or {}).get("type") == "AzureML":
                    self.tree["host"] = value  # the whole workflow runs there (as the magic's --target does)
                else:
                    self.tree.pop("host", None)
        elif kind == "provider":
            self._write_provider(value)
        elif kind == "steps":
            mode, steps, epochs = value
            ta = spec.labels[:-1]
            if mode == "steps":
                set_labels(self.tree, ta + ("max_steps",), steps)
            else:
                if self._base_tree is not None and get_labels(self._merged(), ta + ("max_steps",), -1) != -1:
                    set_labels(self.tree, ta + ("max_steps",), -1)  # an overlay cannot remove the base's
                else:
                    del_labels(self.tree, ta + ("max_steps",))
                set_labels(self.tree, ta + ("num_train_epochs",), epochs)
        elif kind == "goal":
            goal_type, amount = value
            if goal_type == "none":
                del_labels(self.tree, spec.labels)
            else:
                set_labels(self.tree, spec.labels, {"type": goal_type, "value": amount})
        elif kind == "evaluator":
            if value == "none":
                self.tree.pop("evaluator", None)
            else:
                self.tree["evaluator"] = value
        elif value is MISSING:
            del_labels(self.tree, spec.labels)
        else:
            set_labels(self.tree, spec.labels, value)

    def _write_provider(self, provider: str) -> None:
        target = self.tree.get("target")
        gpu = provider == "cuda"
        accelerator = {"device": "gpu" if gpu else "cpu",
                       "execution_providers": ["CUDAExecutionProvider" if gpu else "CPUExecutionProvider"]}
        if target is None:
            if not gpu:
                return
            systems = self.tree.setdefault("systems", {})
            systems.setdefault(GPU_SYSTEM, {"type": "LocalSystem"})["accelerators"] = [accelerator]
            self.tree["target"] = GPU_SYSTEM
            return
        system = self.tree.setdefault("systems", {}).setdefault(target, {})
        accelerators = system.get("accelerators") or [{}]
        first = accelerators[0] if isinstance(accelerators[0], dict) else {}
        first.update(accelerator)
        system["accelerators"] = [first] + list(accelerators[1:])

    # ------------------------------------------------------------------------------------ the API
    def get(self, key: str) -> Any:
        return self.fields[key].value

    def set(self, key: str, value: Any) -> None:
        """Set a field as a user would (through its widget when there is one), then recompute (debounced)."""
        f = self.fields[key]
        self._quiet = True  # one write and one recompute, however many widgets put() touches
        try:
            f.control.put(value)
        finally:
            self._quiet = False
        self._on_change(f)

    def values(self) -> dict[str, Any]:
        return {k: f.value for k, f in self.fields.items()}

    def refresh(self) -> None:
        """Recompute now: validate, then the YAML, the plan and the estimate."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._pending = False
        self.recomputes += 1
        self._validate()
        self._show_errors()
        self._render_outputs()

    @property
    def valid(self) -> bool:
        return self.config is not None

    def cell_text(self) -> str:
        """What Apply writes into the cell (after the magic's line): the YAML the form produces."""
        return self.yaml

    def apply(self, force: bool = False) -> str:
        """Hand the produced YAML to ``on_apply`` (the magic rewrites its cell). Refuses an invalid config unless
        ``force``."""
        if self._pending:
            self.refresh()
        if not self.valid and not force:
            raise ConfigError("the config is not valid yet: " + "; ".join(
                f"{k or 'config'}: {v}" for k, v in self.errors.items()))
        text = self.cell_text()
        self.applied = text
        written = self.on_apply(text) if self.on_apply is not None else None
        self._status("applied: run this cell again (Shift+Enter) to write the new config into it"
                     if written is False else "applied")
        return text

    def preview_data(self, data_config: Optional[str] = None, **kwargs: Any) -> Any:
        """The sample preview (tunecell.widgets.preview) for the form's current settings."""
        from . import preview

        config = self.config or self.last_valid
        if config is None:
            raise ConfigError("the config is not valid yet: fix the fields marked in red first")
        name = data_config or self._data_config_shown() or next(
            (p.train_data_config for p in config.passes.values() if isinstance(p, schema.LoRA)),
            config.data_configs[0].name if config.data_configs else None)
        kwargs.setdefault("widget", self.widgets)
        kwargs.setdefault("on_write", lambda text: self._from_preview(name, text))
        shown = preview(config, tokenizer=self.tokenizer, data_config=name, namespace=self.namespace, **kwargs)
        if self.widget is not None:
            self._output.outputs = ()
            self._output.append_display_data(shown)  # (works in and outside a kernel)
        return shown

    def _from_preview(self, name: str, text: str) -> None:
        """The preview's "Write config": its data settings go into the form's fields (Apply writes the cell)."""
        from tunecell.config import load_config

        pre = load_config(text).data_config(name).pre_process_data_config
        for key in ("text_template", "strategy", "max_seq_len", "train_on_prompt"):
            field_key = f"data_configs.{name}.pre_process_data_config.{key}"
            if field_key in self.fields and self.get(field_key) != getattr(pre, key):
                self.set(field_key, getattr(pre, key))

    def _data_config_shown(self) -> Optional[str]:
        if self.widget is not None and getattr(self, "_data_choice", None) is not None:
            return self._data_choice.value or None
        return None

    def calibrate(self, **kwargs: Any) -> Any:
        """Measure the training step time on this machine (a few real steps; see tunecell.estimate.calibrate),
        then show the new estimate."""
        from tunecell.estimate import calibrate

        if self.config is None:
            raise ConfigError("the config is not valid yet: fix the fields marked in red first")
        self._status("calibrating: a few training steps of the model ...")
        result = calibrate(self.config, tokenizer=self.tokenizer, **kwargs)
        self._status(f"calibrated: {result.s_per_token * 1e3:.3g} ms per token over {result.tokens:,} tokens")
        self._render_outputs()
        return result

    def compare(self, result: Any) -> list[Any]:
        """After a run: compare its measured training time with the estimate, and keep the measured rate (the
        next estimates use it)."""
        from tunecell.estimate import record_run

        self.comparisons = record_run(result, getattr(result, "config", None) or self.config)
        self._render_outputs()
        return self.comparisons

    # -------------------------------------------------------------------------------------- changes
    def _on_change(self, f: FormField) -> None:
        if self._syncing or self._quiet or self._writing:
            return
        self._writing = True  # reading a composite control may touch its widgets (their observers wait)
        try:
            self._write(f)
        finally:
            self._writing = False
        if f.spec.kind in ("target", "provider"):
            if self.base is not None:
                self._validate()
            self._sync(("target", "provider"))
        if f.spec.key == "input_model.model_path":
            self._load_module_names()
        self._schedule()

    def _sync(self, kinds: Sequence[str]) -> None:
        """Show the tree's values again in fields that depend on others (target <-> execution provider)."""
        self._syncing = True
        try:
            for f in self.fields.values():
                if f.spec.kind in kinds:
                    f.control.put(self._read(f.spec))
        finally:
            self._syncing = False

    def _schedule(self) -> None:
        """Debounce: the first change starts a timer on the kernel's event loop; changes before it fires join it.
        Without a running loop (a script, a test) the recompute happens at once."""
        self._pending = True
        if self.debounce <= 0:
            self.refresh()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.refresh()
            return
        if self._timer is None:
            self._timer = loop.call_later(self.debounce, self._fire)

    def _fire(self) -> None:
        self._timer = None
        if self._pending:
            self.refresh()

    # ----------------------------------------------------------------------------------- computing
    def _validate(self) -> None:
        config, errors = validate(self.tree, overrides=self.overrides, base=self.base)
        if config is not None and self.base_dir and not config.base_dir:
            config._base_dir = self.base_dir
        self.config, self.config_errors = config, errors
        if config is not None:
            self.last_valid = config
        self.yaml = self._yaml()

    def _yaml(self) -> str:
        if self.base is None and not self.overrides and self.config is not None:
            return minimal_yaml(self.config)
        if self.base is None and self.config is not None:  # --set on the magic line: the body without them
            body, _ = validate(self.tree)
            if body is not None:
                return minimal_yaml(body)
        return dump_yaml(self.tree)  # an overlay over -f FILE, or a config that does not validate yet

    def _show_errors(self) -> None:
        self.errors = {}
        placed: dict[str, list[str]] = {}
        for e in self.config_errors:
            key = self._field_for(e.path)
            text = e.message + (f" (hint: {e.hint})" if e.hint else "")
            placed.setdefault(key, []).append(text)
            self.errors.setdefault(key, text)
        overridden = {item.partition("=")[0].strip(): item for item in self.overrides}
        for key, f in self.fields.items():
            note = f"overridden on the magic line: --set {overridden[key]}" if key in overridden else ""
            f.show("; ".join(placed.get(key, [])), note)

    def _field_for(self, path: tuple) -> str:
        """The field whose key path is the error's, or the closest one above it ("" for the whole config)."""
        best, best_len = "", -1
        for f in self.fields.values():
            for owned in (f.spec.labels,) + tuple(f.spec.owns):
                n = len(owned)
                if tuple(path[:n]) == tuple(owned) and n > best_len:
                    best, best_len = f.key, n
        return best

    def _load_module_names(self) -> None:
        """The model's linear layers (meta device: no weights), for target_modules."""
        model = self._merged().get("input_model") or {}
        key = repr(model)
        if key == self._model_key:
            return
        self._model_key = key
        self.module_names, self.model_error = None, None
        try:
            from tunecell.estimate import model_skeleton

            self.module_names = list(model_skeleton(schema.InputModel.model_validate(model)).linear_names)
        except Exception as e:  # no local copy, not a valid input_model yet
            self.model_error = str(e).split("\n")[0]
        self._syncing = True  # new options reset a selection for a moment: not an edit
        try:
            for f in getattr(self, "fields", {}).values():
                if f.spec.kind == "modules" and isinstance(f.control, ModulesControl):
                    f.control.set_names(self.module_names or [])
        finally:
            self._syncing = False

    def _compute_estimate(self) -> None:
        config = self.config or self.last_valid
        self.estimate, self.estimate_error = None, None
        if not self.want_estimate or config is None:
            return
        try:
            from tunecell.estimate import estimate

            self.estimate = estimate(config, tokenizer=self.tokenizer)
        except Exception as e:
            self.estimate_error = f"{type(e).__name__}: {e}"

    def _render_outputs(self) -> None:
        config = self.config or self.last_valid
        try:
            from tunecell.planner import plan

            self.plan_text = plan(config).describe() if config is not None else ""
        except Exception as e:
            self.plan_text = f"(no plan: {e})"
        self._compute_estimate()
        if self.widget is not None:
            self._yaml_box.value = self._pane("YAML", self.yaml, stale=not self.valid)
            self._plan_box.value = self._pane("plan", self.plan_text, stale=not self.valid)
            self._estimate_box.value = self._estimate_html(stale=not self.valid)
            self._banner.value = self._banner_html()
            self._apply_button.disabled = not self.valid
            self._preview_button.disabled = config is None or not config.data_configs
            self._calibrate_button.disabled = not self.valid or getattr(self.estimate, "pass_name", None) is None

    # ------------------------------------------------------------------------------------- widgets
    def _build_widget(self) -> Any:
        import ipywidgets as W

        sections: dict[str, list[Any]] = {}
        for f in self.fields.values():
            sections.setdefault(f.spec.section, []).append(f.box)
        boxes = [W.VBox([W.HTML(f"<b>{_e(name)}</b>")] + items,
                        layout=W.Layout(border="1px solid #e3e3e3", padding="4px 6px", margin="0 0 6px 0"))
                 for name, items in sections.items()]
        self._banner = W.HTML()
        self._yaml_box, self._plan_box, self._estimate_box = W.HTML(), W.HTML(), W.HTML()
        self._status_box = W.HTML()
        self._output = W.Output()
        self._apply_button = W.Button(description="Apply", button_style="primary",
                                      tooltip="rewrite the cell with this config")
        self._preview_button = W.Button(description="Preview data", tooltip="the training samples, as configured")
        self._calibrate_button = W.Button(description="Calibrate",
                                          tooltip="time a few real training steps on this machine")
        names = [dc.get("name") for dc in self._merged().get("data_configs") or [] if isinstance(dc, dict)]
        self._data_choice = W.Dropdown(options=[("(training data)", "")] + [(n, n) for n in names], value="",
                                       layout=_layout("170px"))
        self._apply_button.on_click(lambda _: self._click(self.apply))
        self._preview_button.on_click(lambda _: self._click(self.preview_data))
        self._calibrate_button.on_click(lambda _: self._click(self.calibrate))
        buttons = W.HBox([self._apply_button, self._preview_button, self._data_choice, self._calibrate_button,
                          self._status_box])
        left = W.VBox(boxes, layout=W.Layout(width="56%", margin="0 8px 0 0"))
        right = W.VBox([self._estimate_box, self._yaml_box, self._plan_box], layout=W.Layout(width="44%"))
        title = W.HTML(f'<div style="{BOX}"><b>{_e(self.title)}</b> · edit the fields; the YAML, plan and '
                       "estimate follow; Apply writes the YAML into the cell</div>")
        return W.VBox([title, self._banner, W.HBox([left, right]), buttons, self._output])

    def _click(self, action: Callable[[], Any]) -> None:
        try:
            action()
        except Exception as e:  # shown in the form, never a traceback in the log panel
            self._status(f"{type(e).__name__}: {e}" if not isinstance(e, ConfigError) else str(e), error=True)

    def _status(self, text: str, error: bool = False) -> None:
        if self.widget is not None:
            self._status_box.value = f'<span style="{ERROR if error else NOTE}margin-left:8px">{_e(text)}</span>'

    def _pane(self, title: str, text: str, stale: bool = False) -> str:
        flag = " <span style='color:#9a6700'>(last valid settings)</span>" if stale and title != "YAML" else ""
        if stale and title == "YAML":
            flag = " <span style='color:#cf222e'>(not valid yet)</span>"
        return f'<div style="{BOX}"><b>{_e(title)}</b>{flag}<pre style="{PRE}">{_e(text)}</pre></div>'

    def _estimate_html(self, stale: bool = False) -> str:
        flag = " <span style='color:#9a6700'>(last valid settings)</span>" if stale else ""
        parts = [f'<div style="{BOX}"><b>estimate</b>{flag}']
        if self.estimate is not None:
            parts.append('<table style="font-size:12px">')
            parts += [f"<tr><td style='padding-right:10px;color:#57606a'>{_e(k)}</td><td>{_e(v)}</td></tr>"
                      for k, v in self.estimate.rows()]
            parts.append("</table>")
            parts += [f'<div style="{NOTE}">{_e(n)}</div>' for n in self.estimate.notes]
        elif self.estimate_error:
            parts.append(f'<div style="{ERROR}">{_e(self.estimate_error)}</div>')
        else:
            parts.append(f'<div style="{NOTE}">no estimate</div>')
        parts += [f'<div style="{NOTE}">after the run: {_e(c.describe())}</div>' for c in self.comparisons]
        return "".join(parts) + "</div>"

    def _banner_html(self) -> str:
        parts = []
        if self.config_errors:
            parts.append(f'<div style="{ERROR}">{len(self.config_errors)} problem'
                         f'{"s" if len(self.config_errors) > 1 else ""}: '
                         + "; ".join(_e(str(e).split(chr(10))[0]) for e in self.config_errors) + "</div>")
        unplaced = self.errors.get("")
        if unplaced and not self.config_errors:
            parts.append(f'<div style="{ERROR}">{_e(unplaced)}</div>')
        parts += [f'<div style="{NOTE}">note: {_e(n)}</div>' for n in self.notes]
        return f'<div style="{BOX}">{"".join(parts)}</div>' if parts else ""

    # -------------------------------------------------------------------------------- static views
    def to_text(self) -> str:
        lines = [f"{self.title} (static view: the form needs a live kernel with ipywidgets)"]
        section = None
        for f in self.fields.values():
            if f.spec.section != section:
                section = f.spec.section
                lines.append(f"[{section}]")
            lines.append(f"  {f.spec.label}: {_shown(f.value)}" + (f"   ⚠ {f.error}" if f.error else ""))
        if self.errors.get(""):
            lines.append(f"⚠ {self.errors['']}")
        lines += ["", "YAML:" + ("" if self.valid else " (not valid yet)"), self.yaml.rstrip(), "", "plan:",
                  self.plan_text, "", "estimate:"]
        lines.append(self.estimate.describe() if self.estimate is not None else (self.estimate_error or "none"))
        return "\n".join(lines)

    def to_html(self) -> str:
        rows = []
        section = None
        for f in self.fields.values():
            if f.spec.section != section:
                section = f.spec.section
                rows.append(f"<tr><td colspan=2 style='padding-top:4px'><b>{_e(section)}</b></td></tr>")
            error = f"<div style='{ERROR}'>⚠ {_e(f.error)}</div>" if f.error else ""
            rows.append(f"<tr><td style='padding-right:10px;color:#57606a'>{_e(f.spec.label)}</td>"
                        f"<td><code>{_e(_shown(f.value))}</code>{error}</td></tr>")
        return (f'<div class="tunecell-form" style="{BOX}"><b>{_e(self.title)}</b> (static view)'
                f"{self._banner_html()}<div style='display:flex;gap:12px'><table>{''.join(rows)}</table>"
                f"<div>{self._estimate_html()}{self._pane('YAML', self.yaml, not self.valid)}"
                f"{self._pane('plan', self.plan_text, not self.valid)}</div></div></div>")

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if self.widget is not None:
            data = dict(self.widget._repr_mimebundle_(**kwargs) or {})
        try:
            data["text/plain"] = self.to_text()
            data["text/html"] = self.to_html()
        except Exception as e:  # the fallback never breaks the display
            data["text/plain"] = f"tunecell config form ({type(e).__name__}: {e})"
        return data

    def __repr__(self) -> str:
        return self.to_text()


def _shown(value: Any) -> str:
    if value is MISSING or value is None:
        return "—"
    if isinstance(value, tuple) and len(value) == 3 and value[0] in ("steps", "epochs"):
        return f"{value[1]} steps" if value[0] == "steps" else f"{value[2]} epochs"
    if isinstance(value, tuple) and len(value) == 2 and value[0] in GOAL_TYPES:
        return "—" if value[0] == "none" else f"{value[0]} {value[1]}"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)


def _has_widgets() -> bool:
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


def config_form(config_or_text: Any, namespace: Optional[Mapping[str, Any]] = None,
                on_apply: Optional[Callable[[str], Any]] = None, **kwargs: Any) -> ConfigForm:
    """A form over a config (WorkflowConfig, YAML/JSON text in any Olive dialect, a file path or a dict).

    ``on_apply(text)`` gets the produced YAML when Apply is clicked. Keyword arguments: ``overrides`` (--set
    items applied after the form's values), ``base`` (a config the form's text is laid over, as -f FILE),
    ``tokenizer`` (else the model's is loaded, tokenizer files only), ``widgets`` (False: the static summary only),
    ``debounce`` (seconds), ``estimate`` (False: no cost estimate), ``title``.
    """
    return ConfigForm(config_or_text, namespace, on_apply, **kwargs)


# =============================================================================== Apply from a widget callback
_HELD: dict[tuple[int, str], str] = {}


def _parent(shell: Any) -> Optional[dict]:
    """The kernel message being handled now (None outside a kernel: a terminal, a plain InteractiveShell)."""
    kernel = getattr(shell, "kernel", None)
    if kernel is None:
        return None
    try:
        try:
            return kernel.get_parent("shell") or {}
        except TypeError:  # an ipykernel without channels
            return kernel.get_parent() or {}
    except Exception:
        return None


def request_id(shell: Any) -> Optional[str]:
    """The id of the execute request running now, or None (a widget callback is a comm message)."""
    header = (_parent(shell) or {}).get("header", {})
    return header.get("msg_id") if header.get("msg_type") == "execute_request" else None


def write_cell(shell: Any, key: str, text: str, origin: Optional[str] = None, replace: bool = True) -> bool:
    """Replace the cell that showed the form (``key``: its text; ``origin``: the execute request that ran it) with
    ``text`` (or, ``replace`` False, add it below): at once while that cell is executing (or outside a kernel), else
    when that cell is run again. Jupyter delivers a set_next_input payload with the reply of the next executed cell:
    written from a button's callback, or while another cell runs, it would land at that other cell. Returns True
    when written now."""
    if _parent(shell) is None or (origin is not None and request_id(shell) == origin):
        shell.set_next_input(text, replace=replace)
        return True
    _HELD[(id(shell), key)] = text
    return False


def take_held(shell: Any, key: str) -> Optional[str]:
    """The text Apply (or the preview's Write config) left for the cell ``key`` (then forgotten), or None."""
    return _HELD.pop((id(shell), key), None)


def cell_form(shell: Any, magic: str, line: str, cell: str, *, base: Any = None,
              overrides: Sequence[str] = ()) -> Optional[ConfigForm]:
    """The form of a ``%%<magic> --form`` cell. Apply rewrites the cell: ``%%<magic> <line without --form>`` and the
    YAML, with set_next_input(..., replace=True): at once while the cell runs (or outside a kernel); clicked later,
    when the cell is run again (see write_cell)."""
    key = f"{line}\n{cell}"
    held = take_held(shell, key)
    if held is not None:  # Apply was clicked in this cell's form: this run writes the new text into the cell
        shell.set_next_input(held, replace=True)
        print("the cell now holds the config from the form: run it to start the workflow")
        return None
    rest = re.sub(r"(^|\s+)--form(?=\s|$)", "", line).strip()
    head = f"%%{magic} {rest}".rstrip()
    source = cell if cell.strip() else base
    origin = request_id(shell)
    return config_form(source, namespace=getattr(shell, "user_ns", None), overrides=overrides,
                       base=base if cell.strip() else None, title=f"%%{magic} {line.strip()}",
                       on_apply=lambda text: write_cell(shell, key, f"{head}\n{text}", origin))
