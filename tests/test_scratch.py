"""What a killed process was writing beside output_dir's folders (or the converted-model cache) is deleted by the
next process that writes there, and nothing else is."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

from tunecell.runner.output_dir import link_tree

KILLED_WHILE_STAGING = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from tunecell.runner.output_dir import stage

    stage(Path(sys.argv[1]), Path(sys.argv[2]), "identity")
    os.kill(os.getpid(), signal.SIGKILL)  # a kernel restarted before the staged folder took model/'s place
""")


def test_the_folder_a_killed_process_was_publishing_is_deleted_by_the_next_publish(tmp_path):
    source, out = tmp_path / "cache-entry", tmp_path / "out"
    source.mkdir()
    (source / "model.safetensors").write_bytes(b"weights")
    killed = subprocess.run([sys.executable, "-c", KILLED_WHILE_STAGING, str(source), str(out / "model")])
    assert killed.returncode == -9
    left = [p.name for p in out.iterdir()]
    host = socket.gethostname()
    assert len(left) == 1 and left[0].startswith(f".model.tmp-{host}.")
    dead = left[0][len(f".model.tmp-{host}."):].split("-")[0]
    others = [out / f".model.tmp-{host}.{os.getpid()}-running",  # this process's: still writing
              out / f".model.tmp-elsewhere.{dead}-other_host",  # its process cannot be checked from here
              out / f".adapter.tmp-{host}.{dead}-other_name"]  # deleted when adapter/ is next published
    for folder in others:
        folder.mkdir()

    link_tree(source, out / "model", "identity")

    assert sorted(p.name for p in out.iterdir()) == sorted(["model"] + [f.name for f in others])
    assert (out / "model" / "model.safetensors").read_bytes() == b"weights"
