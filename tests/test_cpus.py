"""tunecell.cpus: the CPUs the builder's threads and onnxruntime's sessions get."""
from __future__ import annotations

import os

import pytest

from tunecell import cpus


@pytest.mark.parametrize("cpu_max, expected", [
    (None, 4),  # no cgroup v2 file: the affinity mask
    ("max 100000", 4),  # no quota
    ("150000 100000", 2),  # 1.5 CPUs' worth of time: two threads
    ("50000 100000", 1),
    ("800000 100000", 4),  # a quota above the mask
    ("not a quota", 4),
])
def test_usable_cpus_are_the_affinity_mask_capped_by_the_cgroup_quota(tmp_path, monkeypatch, cpu_max, expected):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    cpu_max_file = tmp_path / "cpu.max"
    if cpu_max is not None:
        cpu_max_file.write_text(cpu_max + "\n")
    monkeypatch.setattr(cpus, "CGROUP_CPU_MAX", cpu_max_file)
    assert cpus.usable_cpus() == expected
