"""What runs inside the AzureML job, before tunecell's own CLI:

    python -m tunecell.azureml.remote --input NAME=PATH ... -- run --config config.json [tunecell run options]

1. fills each ``${{inputs.NAME}}`` of the config with the path AzureML mounted the input at (the placeholders live in
   the config file, where AzureML does not substitute; the command line is where it does);
2. when the job names a Key Vault (KEYVAULT_NAME, HF_TOKEN_SECRET: hf_token in the config), reads the secret with
   azure-keyvault-secrets and the compute's identity, and sets HF_TOKEN in this process only. The token is never
   printed, written, nor passed on a command line;
3. on a distributed job, ranks other than 0 write their outputs and events under output_dir/ranks/<rank> and keep
   the log free of events, so the notebook follows rank 0;
4. runs ``tunecell run`` in this process and exits with its code.

Needs nothing beyond tunecell's own dependencies (the Key Vault packages only when hf_token is set).
"""
from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Mapping, MutableMapping, Optional, Sequence

EXIT_SETUP = 2
_LEFT = re.compile(r"\$\{\{inputs\.(\w+)\}\}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        print("usage: python -m tunecell.azureml.remote [--input NAME=PATH ...] -- run --config FILE ...",
              file=sys.stderr)
        return EXIT_SETUP
    own, cli = argv[:argv.index("--")], argv[argv.index("--") + 1:]
    try:
        inputs = _inputs(own)
        cli = fill_config(cli, inputs)
        cli = per_rank(cli, os.environ)
        load_hf_token(os.environ)
    except SetupError as e:
        print(f"tunecell: {e}", file=sys.stderr, flush=True)
        return EXIT_SETUP
    from tunecell.cli import main as tunecell

    return tunecell(cli, whole_process=True)


class SetupError(Exception):
    pass


def _inputs(words: list[str]) -> dict[str, str]:
    inputs: dict[str, str] = {}
    it = iter(words)
    for word in it:
        if word != "--input":
            raise SetupError(f"unexpected argument {word!r}")
        name, sep, path = next(it, "").partition("=")
        if not sep:
            raise SetupError("--input takes NAME=PATH")
        inputs[name] = path
    return inputs


def fill_config(cli: list[str], inputs: Mapping[str, str]) -> list[str]:
    """Write the config with the inputs' paths filled in next to the original; return the CLI pointing at it."""
    if "--config" not in cli:
        return cli
    at = cli.index("--config") + 1
    source = Path(cli[at])
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as e:
        raise SetupError(f"cannot read the config {source}: {e.strerror or e}") from None
    for name, path in inputs.items():
        text = text.replace("${{inputs.%s}}" % name, json.dumps(path)[1:-1])
    left = sorted(set(_LEFT.findall(text)))
    if left:
        raise SetupError(f"the config reads inputs the job does not have: {', '.join(left)}")
    if any(mark in text for mark in ("{{", "{%", "{#")):  # literal braces in values: not a template here
        text = "{% raw %}" + text + "{% endraw %}"
    target = source.with_name(source.stem + ".job" + source.suffix)
    target.write_text(text, encoding="utf-8")
    return cli[:at] + [str(target)] + cli[at + 1:]


def per_rank(cli: list[str], environ: Mapping[str, str]) -> list[str]:
    """Rank 0 (or a single process) runs as asked; another rank writes under output_dir/ranks/<rank>, no echo."""
    rank = environ.get("RANK") or environ.get("OMPI_COMM_WORLD_RANK") or "0"
    if rank == "0":
        return cli
    out, words = [], iter(cli)
    for word in words:
        if word == "--events":
            value = next(words, "")
            if value != "-":
                path = Path(value)
                out += ["--events", str(path.parent / "ranks" / rank / path.name)]
        elif word == "--set":
            value = next(words, "")
            key, _, path = value.partition("=")
            out += ["--set", f"output_dir={path}/ranks/{rank}" if key == "output_dir" else value]
        else:
            out.append(word)
    return out


def load_hf_token(environ: MutableMapping[str, str]) -> bool:
    """HF_TOKEN from the Key Vault the job names, into this process's environment. True when a token is set."""
    vault, secret = environ.get("KEYVAULT_NAME"), environ.get("HF_TOKEN_SECRET")
    if not vault or not secret:
        return False
    if environ.get("HF_TOKEN"):
        print("tunecell: HF_TOKEN is already set in the job; not reading the Key Vault", flush=True)
        return True
    try:
        from azure.keyvault.secrets import SecretClient
    except ImportError:
        raise SetupError("hf_token is set but azure-keyvault-secrets is not installed in the job's environment: "
                         "add azure-keyvault-secrets and azure-identity to it") from None
    try:
        value = SecretClient(vault_url=f"https://{vault}.vault.azure.net/",
                             credential=_credential(environ)).get_secret(secret).value
    except Exception as e:  # the message names the vault and the secret, never a value (none was read)
        raise SetupError(f"cannot read the secret {secret!r} from Key Vault {vault!r}: {type(e).__name__}: "
                         f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}\n  hint: give the compute's "
                         "managed identity (or the job's identity) 'get' access to the vault's secrets") from None
    if not value:
        raise SetupError(f"the secret {secret!r} in Key Vault {vault!r} is empty")
    environ["HF_TOKEN"] = value
    print(f"tunecell: Hugging Face token read from Key Vault {vault!r} (secret {secret!r})", flush=True)
    return True


def _credential(environ: Mapping[str, str]):
    """The compute's identity. On a cluster with a user-assigned identity AzureML names it in
    DEFAULT_IDENTITY_CLIENT_ID, which DefaultAzureCredential does not read (azure-sdk-for-python#30427)."""
    try:
        from azure.identity import DefaultAzureCredential, ManagedIdentityCredential
    except ImportError:
        raise SetupError("hf_token is set but azure-identity is not installed in the job's environment") from None
    client_id = environ.get("DEFAULT_IDENTITY_CLIENT_ID")
    if client_id and not environ.get("AZURE_CLIENT_ID"):
        return ManagedIdentityCredential(client_id=client_id)
    return DefaultAzureCredential(exclude_interactive_browser_credential=True)


if __name__ == "__main__":
    sys.exit(main())
