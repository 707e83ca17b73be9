"""What a run checks on this machine before any work, and `tunecell validate` with it: the data files it reads
are there (an AzureML run reads its data there), the workspace file an AzureML run names is, and output_dir may be
written (runner/output_dir.py)."""
from __future__ import annotations

from ..config import schema
from ..data.files import resolve_source
from ..errors import ConfigError, DataError
from . import output_dir


def check(config: schema.WorkflowConfig, *, remote: bool) -> None:
    if config.input_model.adapter_path:  # Olive loads it over the model; the passes here would not see it
        raise ConfigError("an input model with an adapter (adapter_path) is not supported yet: the passes would run "
                          "on the model without it", path=("input_model", "adapter_path"),
                          hint="merge the adapter into the model first (peft's merge_and_unload), and point "
                               "model_path at the merged folder")
    output_dir.check(config.resolve(config.output_dir))
    if isinstance(config.input_model.model_path, str):  # a local folder or file, or a hub name (not there)
        output_dir.check_input(config.resolve(config.output_dir), config.resolve(config.input_model.model_path))
    if remote:
        client = config.azureml_client
        if client is not None and client.aml_config_path and not config.resolve(client.aml_config_path).exists():
            raise ConfigError(f"{config.resolve(client.aml_config_path)} does not exist",
                              path=("azureml_client", "aml_config_path"),
                              hint="the config.json downloaded from the workspace's page in the Azure portal")
        return
    for index, data in enumerate(config.data_configs):
        try:
            resolve_source(data, config.base_dir)  # a file that is not there, a glob matching nothing
        except DataError as e:  # named by its place in the config too
            raise DataError(f"{e.message} (data_configs[{index}] {data.name!r}, load_dataset_config)", file=e.file,
                            row=e.row, column=e.column, hint=e.hint) from None
