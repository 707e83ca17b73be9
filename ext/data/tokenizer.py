"""The input model's tokenizer, loaded alone (never the weights): what the preview and the data pipeline need."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import DataError
from .files import hub_offline


def load_tokenizer(spec: Any = None, config: Any = None) -> Any:
    """A tokenizer object as is; a folder or model name loaded with AutoTokenizer; None: the config's input_model
    (resolved with tunecell.models.resolve_model, tokenizer files only)."""
    if spec is not None and not isinstance(spec, (str, os.PathLike)):
        return spec
    kwargs: dict[str, Any] = {}
    if spec is None:
        if config is None or getattr(config, "input_model", None) is None:
            raise DataError("the preview needs a tokenizer: pass tokenizer=<tokenizer, model folder or name>, "
                            "or a config with input_model")
        model = config.input_model
        local = Path(os.path.expanduser(model.model_path)) if isinstance(model.model_path, str) else None
        if local is not None and local.is_dir() and not model.gguf_file:
            path = local  # a local HF folder: read its tokenizer files, never hash or load the weights
        else:
            from tunecell.models import resolve_model

            path = resolve_model(model, Path(config.resolve(config.cache_dir)), convert_gguf=False).path
            if path.is_file():  # a GGUF not converted yet: its tokenizer is read from the file
                path, kwargs["gguf_file"] = path.parent, path.name
        load_kwargs = getattr(config.input_model, "load_kwargs", None)
        if load_kwargs is not None and load_kwargs.trust_remote_code:
            kwargs["trust_remote_code"] = True
        if load_kwargs is not None and load_kwargs.revision:
            kwargs["revision"] = load_kwargs.revision
    else:
        path = spec
    from transformers import AutoTokenizer

    local = Path(os.path.expanduser(str(path))).exists()
    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=local or hub_offline(), **kwargs)
    except Exception as e:
        hint = None if local else "point tokenizer= (or input_model.model_path) at a local model folder"
        raise DataError(f"cannot load the tokenizer of {str(path)!r}: {type(e).__name__}: {str(e).splitlines()[0]}",
                        hint=hint) from None
