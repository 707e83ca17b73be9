"""Drive a real JupyterLab in headless Chromium (Debian's chromium, through Python playwright), as a person would.

Used by tests/test_browser.py, and runnable on its own to take the README's screenshots on the real model:

    .venv/bin/python tests/browser/lab.py --out example_notebooks/images            # the defaults: SmolLM2, 100 steps
    .venv/bin/python tests/browser/lab.py --out shots --parameters params.py    # another parameters cell

Nothing here downloads a browser: playwright is given the Debian binary (/usr/bin/chromium, or $TUNECELL_CHROMIUM).
The server runs on 127.0.0.1 with a random token, with its config, data, runtime, settings and workspace folders
inside the run's own folder, so it never reads nor writes the user's Jupyter setup.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

NOTEBOOKS = Path(__file__).resolve().parents[2] / "example_notebooks"
CHROMIUM = os.environ.get("TUNECELL_CHROMIUM", "/usr/bin/chromium")
# as the machine notes say: without the networking flags Chromium keeps trying to reach Google's hosts
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]
SETUP_HINT = "install it with: bash .ci/browser-setup.sh"
# JupyterLab settings for a quiet, fully rendered notebook: no news or update toasts over the cells, and no
# windowing (every cell in the DOM, so a screenshot of any cell shows its outputs)
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                        "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}


class BrowserMissing(RuntimeError):
    pass


def check_browser() -> None:
    """Raise BrowserMissing, saying what to install, when playwright or the chromium binary is missing."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as e:
        raise BrowserMissing(f"the browser test needs Python playwright ({e}); {SETUP_HINT}") from None
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        raise BrowserMissing(f"the browser test needs Chromium at {CHROMIUM} (Debian's chromium package, or set "
                             f"TUNECELL_CHROMIUM); {SETUP_HINT}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare_root(root: Path, notebook: str = "tone-classifier.ipynb", parameters: Optional[str] = None) -> Path:
    """A copy of ``notebook`` and the data folder in ``root``; ``parameters`` replaces its `parameters` cell."""
    root.mkdir(parents=True, exist_ok=True)
    if not (root / "data").exists():
        shutil.copytree(NOTEBOOKS / "data", root / "data")
    nb = json.loads((NOTEBOOKS / notebook).read_text(encoding="utf-8"))
    if parameters is not None:
        cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
        cell["source"] = parameters.splitlines(keepends=True)
    (root / notebook).write_text(json.dumps(nb, indent=1) + "\n", encoding="utf-8")
    return root / notebook


class LabServer:
    """`jupyter lab --no-browser` on 127.0.0.1, a free port and a random token, serving ``root``."""

    def __init__(self, root: Path, home: Path):
        self.root, self.home = root, home
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = home / "jupyter-lab.log"
        self.process: Optional[subprocess.Popen] = None

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        dirs = {"JUPYTER_CONFIG_DIR": "config", "JUPYTER_DATA_DIR": "data", "JUPYTER_RUNTIME_DIR": "runtime",
                "JUPYTERLAB_SETTINGS_DIR": "lab-settings", "JUPYTERLAB_WORKSPACES_DIR": "lab-workspaces",
                "IPYTHONDIR": "ipython"}
        for name, folder in dirs.items():
            env[name] = str(self.home / folder)
            (self.home / folder).mkdir(parents=True, exist_ok=True)
        for name, values in LAB_SETTINGS.items():
            path = self.home / "lab-settings" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values), encoding="utf-8")
        # the kernel is this interpreter's: the venv's python3 kernelspec, found under sys.prefix
        env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
        return env

    def start(self, timeout: float = 90) -> "LabServer":
        command = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1",
                   f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
                   f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={self.root}",
                   "--ServerApp.terminals_enabled=False", "--LabApp.extension_manager=readonly",
                   "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:  # CI containers run as root
            command.append("--allow-root")
        self.home.mkdir(parents=True, exist_ok=True)
        self.log = open(self.log_path, "w", encoding="utf-8")
        self.process = subprocess.Popen(command, cwd=self.root, env=self.env(), stdout=self.log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {self.process.returncode}:\n{self.log_text()}")
            try:
                with urllib.request.urlopen(f"{self.url}/api/status?token={self.token}", timeout=2) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.5)
        raise RuntimeError(f"jupyter lab did not answer in {timeout:.0f} s:\n{self.log_text()}")

    def log_text(self, tail: int = 6000) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-tail:] if self.log_path.exists() else ""

    def stop(self) -> None:
        """Shut the server down through its API (which stops its kernels), then make sure the process is gone."""
        if self.process is None:
            return
        if self.process.poll() is None:
            try:
                request = urllib.request.Request(f"{self.url}/api/shutdown", method="POST",
                                                 headers={"Authorization": f"token {self.token}"})
                urllib.request.urlopen(request, timeout=10).close()
                self.process.wait(timeout=20)
            except (urllib.error.URLError, ConnectionError, TimeoutError, subprocess.TimeoutExpired):
                self.process.terminate()
                try:
                    self.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
        self.log.close()

    def notebook_url(self, name: str) -> str:
        return f"{self.url}/lab/tree/{name}?token={self.token}"


@contextmanager
def lab(root: Path, home: Path) -> Iterator[LabServer]:
    server = LabServer(root, home).start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def chromium_page(width: int = 1280, height: int = 1000) -> Iterator[Any]:
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        for attempt in (1, 2):  # a loaded machine can miss the launch timeout once
            try:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True,
                                            timeout=60_000)
                break
            except PlaywrightError as e:
                if attempt == 2:
                    raise
                print(f"Chromium did not start ({str(e).splitlines()[0]}); trying once more")
                time.sleep(2)
        try:
            context = browser.new_context(viewport={"width": width, "height": height}, device_scale_factor=1)
            yield context.new_page()
        finally:
            browser.close()


# ------------------------------------------------------------------------------------------- the notebook
class NotebookPage:
    """A notebook open in JupyterLab: run cells with Shift+Enter, find cells and their outputs."""

    def __init__(self, page: Any, server: LabServer, name: str):
        self.page, self.server, self.name = page, server, name
        self.source = json.loads((server.root / name).read_text(encoding="utf-8"))

    def open(self, timeout_s: float = 120) -> "NotebookPage":
        self.page.goto(self.server.notebook_url(self.name), timeout=timeout_s * 1000)
        self.page.wait_for_selector(".jp-NotebookPanel .jp-Notebook .jp-Cell", timeout=timeout_s * 1000)
        self.wait_idle(timeout_s)
        return self

    def wait_idle(self, timeout_s: float) -> None:
        """Until the kernel is started and idle (the toolbar's execution indicator)."""
        self.page.wait_for_selector(".jp-NotebookPanel .jp-Notebook-ExecutionIndicator[data-status='idle']",
                                    timeout=timeout_s * 1000)

    def cell(self, index: int) -> Any:
        return self.page.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell").nth(index)

    def index_of(self, prefix: str) -> int:
        return next(i for i, c in enumerate(self.source["cells"])
                    if c["cell_type"] == "code" and "".join(c["source"]).startswith(prefix))

    def run_cell(self, index: int, tries: int = 3) -> None:
        """Click the cell's prompt (selects it, command mode) and press Shift+Enter, as a person does; then wait
        until the prompt says the cell is queued or ran ([*] or [n]), pressing again if the key was lost."""
        prompt = self.cell(index).locator(".jp-InputArea-prompt").first
        for _ in range(tries):
            prompt.scroll_into_view_if_needed()
            prompt.click()
            self.page.keyboard.press("Shift+Enter")
            for _ in range(40):
                if re.search(r"\[(\*|\d+)\]", prompt.inner_text()):
                    return
                self.page.wait_for_timeout(250)
        raise RuntimeError(f"cell {index} did not start after {tries} Shift+Enter")

    def run_through(self, last: int) -> None:
        """Run each code cell up to and including ``last``, in order (the kernel queues them)."""
        for index, cell in enumerate(self.source["cells"][:last + 1]):
            if cell["cell_type"] == "code":
                self.run_cell(index)

    def outputs(self, index: int) -> Any:
        return self.cell(index).locator(".jp-OutputArea-output")

    def output_with(self, index: int, selector: str) -> Any:
        """The output of cell ``index`` that holds ``selector`` (a cell may also print warnings before it)."""
        return self.outputs(index).filter(has=self.page.locator(selector)).first


# -------------------------------------------------------------------------------- README screenshots
def readme_screenshots(out: Path, work: Path, parameters: Optional[str], timeout_s: float) -> list[Path]:
    """Run the whole tone-classifier notebook in the browser; screenshot the preview and the final summary."""
    check_browser()
    root = work / "root"
    prepare_root(root, parameters=parameters)
    out.mkdir(parents=True, exist_ok=True)
    with lab(root, work / "home") as server, chromium_page(width=1100) as page:
        nb = NotebookPage(page, server, "tone-classifier.ipynb").open()
        last = len(nb.source["cells"]) - 1
        nb.run_through(last)
        preview = nb.index_of("%%finetune --preview")
        shots = [out / "preview.png", out / "summary.png"]
        widget = nb.output_with(preview, ".tc-tok")
        widget.wait_for(timeout=timeout_s * 1000)
        page.wait_for_timeout(500)
        widget.screenshot(path=str(shots[0]))
        summary = nb.cell(last).locator(".tunecell-summary")
        summary.wait_for(timeout=timeout_s * 1000)
        nb.wait_idle(60)
        page.wait_for_timeout(1000)
        nb.cell(last).locator(".jp-Cell-outputWrapper").screenshot(path=str(shots[1]))
    return shots


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for preview.png and summary.png")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a new temp folder)")
    parser.add_argument("--parameters", type=Path, help="a file whose text replaces the notebook's parameters cell")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait for the whole notebook")
    args = parser.parse_args()
    import signal
    import tempfile

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that the server and its kernel are shut down

    work = args.work or Path(tempfile.mkdtemp(prefix="tunecell-lab-"))
    parameters = args.parameters.read_text(encoding="utf-8") if args.parameters else None
    for path in readme_screenshots(args.out, work, parameters, args.timeout):
        print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
