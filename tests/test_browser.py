"""tone-classifier.ipynb in a real JupyterLab, in headless Chromium, checked as a person sees it.

`jupyter lab --no-browser` serves a copy of the notebook (tiny-model parameters injected) on 127.0.0.1 with a random
token; Chromium (Debian's package, driven by Python playwright: tests/browser/lab.py) opens it, runs the cells with
Shift+Enter up to and including `%%finetune -o ft`, and checks:
- the preview widget: token chips coloured by role (green carries the loss, grey is masked), its controls;
- the run's progress view: every bar of tunecell's view full and green, lora's bar at step 6/6;
- the summary table (metric x model) that the finished run leaves.
Screenshots go to the test's tmp folder, and to $TUNECELL_ARTIFACTS when it is set.

No browser or playwright is a failure, not a skip: CI installs both with .ci/browser-setup.sh.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from browser.lab import BrowserMissing, NotebookPage, check_browser, chromium_page, lab, prepare_root
from test_notebooks import TINY_STEPS, tiny_parameters

NAME = "tone-classifier.ipynb"
LOSS_GREEN = "rgb(216, 240, 216)"  # widgets/render.py STYLES["loss"]
MASKED_GREY = "rgb(238, 238, 238)"  # STYLES["masked"]
RUN_TIMEOUT_MS = 600_000

# The bars of tunecell's own view (the output that holds "tunecell run ..." and progress bars): width and classes.
TUNECELL_BARS = """cell => {
  for (const out of cell.querySelectorAll('.jp-OutputArea-child')) {
    if (!out.querySelector('.widget-hprogress') || !out.textContent.includes('tunecell run')) continue;
    return [...out.querySelectorAll('.widget-hprogress .progress-bar')].map(bar => ({
      width: bar.style.width, className: bar.className,
      full: Math.abs(bar.getBoundingClientRect().width - bar.parentElement.getBoundingClientRect().width) < 1.5}));
  }
  return null;
}"""


@pytest.fixture
def screenshots(tmp_path: Path):
    folder = tmp_path / "screenshots"
    folder.mkdir()
    yield folder
    target = os.environ.get("TUNECELL_ARTIFACTS")
    if target:  # copied even when the test failed: failure.png says most
        shutil.copytree(folder, Path(target) / "browser", dirs_exist_ok=True)


def test_tone_classifier_in_jupyterlab(tiny_model: Path, tmp_path: Path, screenshots: Path) -> None:
    try:  # a failure, not a skip nor a setup error: CI must have the browser (.ci/browser-setup.sh)
        check_browser()
    except BrowserMissing as e:
        pytest.fail(str(e), pytrace=False)
    root = tmp_path / "lab"
    prepare_root(root, NAME, tiny_parameters(tiny_model, tmp_path / "run"))
    with lab(root, tmp_path / "home") as server, chromium_page(width=1280, height=1800) as page:
        try:
            nb = NotebookPage(page, server, NAME).open()
            preview_at, finetune_at = nb.index_of("%%finetune --preview"), nb.index_of("%%finetune -o ft")
            nb.run_through(finetune_at)

            # --- the preview widget: coloured token chips, its controls
            preview = nb.output_with(preview_at, ".tc-tok")
            preview.wait_for(timeout=180_000)
            assert preview.get_by_role("button", name="Write config").is_visible()
            assert preview.get_by_role("button", name="next ▶").is_visible()
            assert "tunecell preview" in preview.inner_text()
            chips = preview.locator(".tc-tok")
            colours = chips.evaluate_all("els => els.map(e => getComputedStyle(e).backgroundColor)")
            assert len(colours) >= 10 and LOSS_GREEN in colours and MASKED_GREY in colours, colours
            # the prompt is masked (train_on_prompt: false): most chips grey, the answer green
            assert colours.count(MASKED_GREY) > colours.count(LOSS_GREEN) > 0
            preview.screenshot(path=str(screenshots / "preview.png"))

            # --- the run: progress bars that reach the end, then the summary table
            cell = nb.cell(finetune_at)
            summary = cell.locator(".tunecell-summary")
            summary.wait_for(timeout=RUN_TIMEOUT_MS)
            nb.wait_idle(60)
            page.wait_for_timeout(500)  # the last widget updates
            bars = cell.evaluate(TUNECELL_BARS)
            assert bars is not None and len(bars) == 2, bars  # the run's bar and lora's
            for bar in bars:
                assert bar["width"] == "100%" and bar["full"] and "progress-bar-success" in bar["className"], bar
            assert f"step {TINY_STEPS}/{TINY_STEPS}" in cell.inner_text()
            assert "succeeded" in summary.inner_text()
            tables = summary.locator("table")
            metrics = tables.nth(tables.count() - 1)
            assert metrics.locator("th").all_inner_texts() == ["metric", "input", "lora"]
            rows = [r.locator("td").all_inner_texts() for r in metrics.locator("tr").all()[1:]]
            assert [r[0] for r in rows] == ["accuracy", "latency"] and all(len(r) == 3 for r in rows), rows
            cell.locator(".jp-Cell-outputWrapper").screenshot(path=str(screenshots / "finetune.png"))
            page.screenshot(path=str(screenshots / "notebook.png"))
        except Exception:
            page.screenshot(path=str(screenshots / "failure.png"), full_page=True)
            print(server.log_text())
            raise
    for name in ("preview.png", "finetune.png", "notebook.png"):
        assert (screenshots / name).stat().st_size > 10_000, name
