"""The config language: any Olive dialect in, one typed WorkflowConfig out."""
from .loader import fill_template, load_config
from .schema import WorkflowConfig

__all__ = ["load_config", "fill_template", "WorkflowConfig"]
