"""reuse_freed_memory: a second step's large tensor reuses the first one's pages instead of
faulting fresh ones in (measured by the process's minor page faults, in fresh processes)."""
import subprocess
import sys
from pathlib import Path

import pytest

from graphdiff.memory import reuse_freed_memory

STEP = """
import resource, sys
import torch
from graphdiff.memory import reuse_freed_memory
if sys.argv[1] == "reuse":
    assert reuse_freed_memory()

def faults_of_one_step():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.ones(16 * 2**20)  # 64 MB, over glibc's largest mmap threshold, all pages touched
    del x
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

faults_of_one_step()
print(faults_of_one_step())
"""


def faults_of_second_step(mode: str) -> int:
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", STEP, mode], capture_output=True, text=True,
                         cwd=root, check=True)
    return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_second_step_reuses_the_first_steps_pages():
    pages = 64 * 2**20 // 4096
    assert faults_of_second_step("default") > pages // 2  # fresh pages, faulted in again
    assert faults_of_second_step("reuse") < pages // 20


def test_without_glibc_it_changes_nothing_and_says_so(monkeypatch):
    import ctypes

    class NoMallopt:  # a C library without mallopt, like macOS's
        def __init__(self, name):
            pass

    monkeypatch.setattr(ctypes, "CDLL", NoMallopt)
    assert reuse_freed_memory() is False
