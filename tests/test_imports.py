"""transformers' table of model modules, read once (tunecell.imports). In a fresh interpreter: imports are per
process."""
import subprocess
import sys

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
