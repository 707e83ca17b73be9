"""Resolving input_model to a local HF folder with a content identity."""
from .resolve import ResolvedModel, resolve_model

__all__ = ["ResolvedModel", "resolve_model"]
