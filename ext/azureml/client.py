"""The MLClient for a config: which workspace, which credential, which retries; errors that name what is wrong.

- Workspace: ``azureml_client: {subscription_id, resource_group, workspace_name}``, or ``aml_config_path`` (the
  config.json the portal gives, read by ``MLClient.from_config``), or with neither, a config.json found from the
  config's folder upwards.
- Credential: DefaultAzureCredential (az login, environment, managed identity ...); when it has nothing, a device
  code login whose code is shown in the cell (a browser login cannot reach a remote kernel); a TunecellError
  saying what to do when neither works. The credential is kept for the kernel's life.
- Retries: azure-core's RetryPolicy on every service client (``retry_total`` etc. are passed to MLClient, which
  hands them to each client): 408/429/5xx and connection errors are retried with back-off, honouring Retry-After.
"""
from __future__ import annotations

import logging
import re
import threading
from pathlib import Path
from typing import Any, Callable, Optional

from ..config import schema
from ..errors import TunecellError

_QUERY = re.compile(r"\?[^\s'\")]*=[^\s'\")]*")  # a URL's query: a storage URL's holds its SAS signature
_SIGNATURE = re.compile(r"\bsig=[^\s&'\")]+")

ARM_SCOPE = "https://management.azure.com/.default"
RETRY = {"retry_total": 5, "retry_backoff_factor": 1.0, "retry_backoff_max": 30}
CLIENT_DEFAULTS = {"enable_telemetry": False, "show_progress": False, "read_timeout": 60}
DEVICE_CODE_TIMEOUT_S = 300

_credential: Optional[Any] = None
_credential_lock = threading.Lock()


def require_sdk() -> None:
    try:
        import azure.ai.ml  # noqa: F401
        import azure.identity  # noqa: F401
    except ImportError as e:
        raise TunecellError(f"running on AzureML needs the azureml extra ({e.name} is not installed)\n"
                            "  hint: pip install 'tunecell[azureml]'") from None
    _quiet_sdk_loggers()


_quieted = False


def _quiet_sdk_loggers() -> None:
    """azure-ai-ml sets its logger to INFO with its own stderr handler at import, and logs each experimental class it
    touches; azure-identity logs each credential it tries. Keep the cell readable: errors only (once per process,
    so a level set afterwards is kept)."""
    global _quieted
    if _quieted:
        return
    _quieted = True
    for name in ("azure.ai.ml", "azure.identity", "azure.core.pipeline.policies.http_logging_policy"):
        logging.getLogger(name).setLevel(logging.ERROR)


def get_credential(say: Callable[[str], None] = print, *, device_code: bool = True, refresh: bool = False) -> Any:
    """DefaultAzureCredential if it can get a token, else a device code login (``say`` shows the code).

    Raises TunecellError when neither works. The working credential is kept for later calls (``refresh`` drops it).
    """
    global _credential
    require_sdk()
    from azure.core.exceptions import ClientAuthenticationError
    from azure.identity import DefaultAzureCredential, DeviceCodeCredential

    with _credential_lock:
        if _credential is not None and not refresh:
            return _credential
        reasons = []
        default = DefaultAzureCredential(process_timeout=10)
        try:
            default.get_token(ARM_SCOPE)
            _credential = default
            return default
        except ClientAuthenticationError as e:
            reasons.append(f"DefaultAzureCredential: {_first_line(e)}")
        if device_code:
            def prompt(verification_uri: str, user_code: str, expires_on: Any) -> None:
                say(f"To sign in to Azure, open {verification_uri} and enter the code {user_code}")

            say("no Azure login found on this machine (az login, environment, managed identity): "
                "trying a device code login")
            login = DeviceCodeCredential(prompt_callback=prompt, timeout=DEVICE_CODE_TIMEOUT_S)
            try:
                login.get_token(ARM_SCOPE)
                _credential = login
                return login
            except ClientAuthenticationError as e:
                reasons.append(f"device code login: {_first_line(e)}")
        raise TunecellError("no Azure credential works: " + "; ".join(reasons) +
                            "\n  hint: run `az login` (or `az login --use-device-code`) on the machine running the "
                            "kernel, set AZURE_TENANT_ID/AZURE_CLIENT_ID/AZURE_CLIENT_SECRET, or use a managed identity")


def ml_client(client: Optional[schema.AzureMLClient], *, credential: Any = None, base_dir: Optional[str] = None,
              say: Callable[[str], None] = print, **kwargs: Any) -> Any:
    """An MLClient for the workspace ``client`` names (see the module doc). ``kwargs`` go to MLClient (and from
    there to every service client's pipeline: ``transport``, ``retry_total`` ...)."""
    require_sdk()
    from azure.ai.ml import MLClient
    from azure.ai.ml.exceptions import ValidationException

    options = {**RETRY, **CLIENT_DEFAULTS, **kwargs}
    if client is not None and client.subscription_id and client.resource_group and client.workspace_name:
        credential = credential if credential is not None else get_credential(say)
        return MLClient(credential, client.subscription_id, client.resource_group, client.workspace_name, **options)
    if client is not None and client.aml_config_path:
        path = Path(client.aml_config_path).expanduser()
        if not path.is_absolute() and base_dir:
            path = Path(base_dir) / path
        if not path.exists():
            raise TunecellError(f"azureml_client.aml_config_path: {path} does not exist")
        where = path
    else:
        where = Path(base_dir) if base_dir else Path.cwd()
    credential = credential if credential is not None else get_credential(say)  # a login, once the workspace is known
    try:
        return MLClient.from_config(credential, path=str(where), **options)
    except ValidationException as e:
        raise TunecellError(f"cannot tell which AzureML workspace to use: {_first_line(e)}\n  hint: add azureml_client: "
                            "{subscription_id, resource_group, workspace_name} to the config, or aml_config_path: "
                            "the config.json downloaded from the workspace's page in the Azure portal") from None


# ------------------------------------------------------------------------------------------- errors that name it
def error_code(error: BaseException) -> str:
    """The service's error code of an azure-core HttpResponseError ("ResourceGroupNotFound" ...), or ""."""
    code = getattr(getattr(error, "error", None), "code", None)
    if code:
        return str(code)
    response = getattr(error, "response", None)
    try:
        return str(response.json().get("error", {}).get("code", "")) if response is not None else ""
    except Exception:
        return ""


def status_code(error: BaseException) -> Optional[int]:
    return getattr(error, "status_code", None) or getattr(getattr(error, "response", None), "status_code", None)


def check_workspace(ml: Any) -> Any:
    """GET the workspace (a cheap call that proves the credential, subscription, group and name); returns it.

    A wrong subscription, resource group or workspace name gives a TunecellError naming the wrong one."""
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError

    sub, group, name = ml.subscription_id, ml.resource_group_name, ml.workspace_name
    try:
        return ml.workspaces.get(name)
    except ClientAuthenticationError as e:
        raise TunecellError(f"Azure refused the credential: {_first_line(e)}\n  hint: az login, or check the tenant") \
            from None
    except HttpResponseError as e:
        code, status = error_code(e), status_code(e)
        if code in ("SubscriptionNotFound", "InvalidSubscriptionId"):
            message = f"subscription {sub!r} was not found, or this account cannot see it"
        elif code == "ResourceGroupNotFound":
            message = f"resource group {group!r} was not found in subscription {sub}"
        elif status == 404:
            message = f"AzureML workspace {name!r} was not found in resource group {group!r} (subscription {sub})"
        elif status in (401, 403):
            message = f"this account may not use AzureML workspace {name!r} ({code or status}: {_first_line(e)})"
        else:
            raise
        raise TunecellError(f"azureml_client: {message}\n  hint: check azureml_client (or the aml_config_path "
                            "file) against the workspace's page in the Azure portal") from None


def check_compute(ml: Any, name: str) -> Any:
    """GET the compute target; an unknown name gives a TunecellError naming it and listing the workspace's own."""
    from azure.core.exceptions import ResourceNotFoundError

    try:
        return ml.compute.get(name)
    except ResourceNotFoundError:
        try:
            known = sorted(c.name for c in ml.compute.list())
        except Exception:
            known = []
        listing = f"its computes: {', '.join(known)}" if known else "it lists no computes"
        raise TunecellError(f"aml_compute: compute {name!r} is not in AzureML workspace {ml.workspace_name!r} "
                            f"({listing})") from None


def keyvault_name(workspace: Any) -> Optional[str]:
    """The name of the workspace's own Key Vault (its ARM id's last segment)."""
    vault = getattr(workspace, "key_vault", None)
    return str(vault).rstrip("/").rsplit("/", 1)[-1] if vault else None


def _first_line(error: BaseException) -> str:
    """The error's first line, without URL queries and SAS signatures."""
    text = str(getattr(error, "message", None) or error).strip()
    line = text.splitlines()[0] if text else type(error).__name__
    return _SIGNATURE.sub("sig=...", _QUERY.sub("?...", line))
