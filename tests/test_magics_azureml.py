"""The %tunecell subcommands on an AzureML job recorded in a config's own cache folder, through the in-process fake
of tests/fake_azureml.py (test_azureml.py's fixtures: the config names `cache_dir: cache`)."""
from __future__ import annotations

import pytest

pytest.importorskip("azure.ai.ml")
pytestmark = [pytest.mark.filterwarnings("ignore:The `context` parameter is deprecated"),  # marshmallow 4, in the SDK
              pytest.mark.filterwarnings("ignore::DeprecationWarning:azure.storage.blob")]

from test_azureml import fake, ml, offline, script_job, work  # noqa: E402,F401  (fixtures, offline autouse)


def test_a_job_left_running_is_followed_from_the_cache_folder_of_its_config(fake, ml, work, monkeypatch, capsys):
    from IPython.core.interactiveshell import InteractiveShell

    from tunecell.azureml import client, submission
    from tunecell.magics import TuneCell

    monkeypatch.setattr(client, "ml_client", lambda *a, **k: ml)
    magics = TuneCell(InteractiveShell.instance())  # no %config TuneCell.cache_dir: the config's own is used
    magics.progress = "none"
    script_job(fake)
    wait = submission.AzureMLRun._wait

    def interrupt_once(self, seconds, stop):  # the kernel is interrupted while the job is queued
        monkeypatch.setattr(submission.AzureMLRun, "_wait", wait)
        raise KeyboardInterrupt

    monkeypatch.setattr(submission.AzureMLRun, "_wait", interrupt_once)
    magics.finetune("-f tones.yaml -o tuned", "")
    job = magics.shell.user_ns["tuned"].run_id
    assert magics.runs[job].status == "running"
    magics.tunecell("runs")
    assert f"{job}: submitted  AzureML job" in capsys.readouterr().out
    magics.tunecell(f"follow {job}")
    assert magics.runs[job].status == "succeeded" and (work / "out" / "manifest.json").is_file()
    assert f"tunecell run {magics.runs[job].run_id}: succeeded" in capsys.readouterr().out  # its summary

    restarted = TuneCell(InteractiveShell.instance())
    restarted.tunecell("runs")
    assert capsys.readouterr().out == f"no runs recorded under {work / '.tunecell' / 'cache'}\n"
    restarted.tunecell("runs --cache-dir cache")
    assert f"{job}: succeeded  {work / 'out' / 'manifest.json'}" in capsys.readouterr().out
    restarted.tunecell(f"logs {job} --cache-dir cache")
    assert capsys.readouterr().out.startswith(f"AzureML job {job}: Completed")
    from IPython.core.error import UsageError

    with pytest.raises(UsageError, match=rf"<AzureML job {job}: .*> is not a run result: give --model"):
        restarted.generate("", "hello")  # the session's last run is the job's handle
