"""tunecell.imports: transformers' table of model modules read once, bitsandbytes' torch.compile calls deferred to
first use. In fresh interpreters: imports are per process."""
import subprocess
import sys

import pytest

SCRIPT = """
from pathlib import Path

from transformers.utils import import_utils  # the package's scan of transformers/models happens here

scanned = []
read = import_utils.create_import_structure_from_path
import_utils.create_import_structure_from_path = lambda path: scanned.append(Path(path)) or read(path)
package_scan = import_utils.define_import_structure

from tunecell.imports import transformers_scanned_once
transformers_scanned_once()
transformers_scanned_once()  # a second call wraps nothing more
import transformers.models
from transformers import AutoModelForCausalLM, Phi3ForCausalLM  # model classes still import

models = Path(transformers.__file__).parent / "models"
assert models / "__init__.py" not in scanned and models not in scanned, scanned
fresh = package_scan.__wrapped__(str(models / "__init__.py"))  # transformers' own scan, uncached
assert import_utils.define_import_structure(str(models / "__init__.py")) == fresh
assert transformers.models.Phi3ForCausalLM is Phi3ForCausalLM
print("ok")
"""


def test_transformers_models_take_the_table_of_the_package_scan():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


BITSANDBYTES_IMPORT = """
import sys

from tunecell.imports import bitsandbytes_compiled_on_first_use
bitsandbytes_compiled_on_first_use()
import peft  # imports bitsandbytes, where installed
assert "bitsandbytes" in sys.modules
assert "torch._inductor.compile_fx" not in sys.modules  # what resolving torch.compile's backend imports
print("ok")
"""

BITSANDBYTES_FIRST_USE = """
import torch

compiled = []
def compile_and_count(model=None, **options):  # the real one would build C++ kernels for seconds
    compiled.append((model.__name__, options))
    return model
torch.compile = compile_and_count

from tunecell.imports import bitsandbytes_compiled_on_first_use
bitsandbytes_compiled_on_first_use()
from bitsandbytes.backends.default import ops
assert compiled == [] and torch.compile is compile_and_count

codes, absmax, code = torch.tensor([0, 3, 1, 2], dtype=torch.uint8), torch.tensor([2.0, 0.5]), torch.linspace(-1, 1, 4)
for _ in range(2):
    out = ops._dequantize_blockwise_compute(codes, absmax, code, 2, torch.float32)
assert compiled == [("_dequantize_blockwise_compute", {"dynamic": False})], compiled  # once, with its options
assert torch.equal(out, ops._dequantize_blockwise_compute.__wrapped__(codes, absmax, code, 2, torch.float32))
print("ok")
"""


@pytest.mark.parametrize("script", [BITSANDBYTES_IMPORT, BITSANDBYTES_FIRST_USE], ids=["import", "first-use"])
def test_bitsandbytes_compiles_its_kernels_at_first_use_not_on_import(script):
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
