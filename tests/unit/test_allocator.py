"""The host allocator setting: with ``reuse``, a forward pass runs in memory the one before it freed; and the
loaded objects kept out of the garbage collector's walks."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

from moderation.allocator import configure_allocator

FORWARD_PASSES = """
import json, resource, statistics, sys
from moderation.allocator import configure_allocator
changed = configure_allocator(sys.argv[1])  # first, as the worker does
import torch
torch.set_num_threads(1)
torch.manual_seed(0)
conv = torch.nn.Conv2d
model = torch.nn.Sequential(conv(3, 32, 3, padding=1), torch.nn.ReLU(), conv(32, 32, 3, padding=1))
images = torch.rand(8, 3, 224, 224)

def faults_of_one_pass():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    with torch.inference_mode():
        model(images)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

faults_of_one_pass()  # the first pass faults its memory in either way
print(json.dumps({"changed": changed, "faults": statistics.median(faults_of_one_pass() for _ in range(7))}))
"""
#: 4 KiB pages of one pass's largest activation, 8 x 32 x 224 x 224 floats: 49 MiB, over the 32 MiB up to which
#: glibc raises its mmap threshold by itself, so on glibc's defaults every pass must map it anew, whatever the
#: allocation history (with smaller blocks the defaults sometimes settle into reuse on their own).
ACTIVATION_PAGES = 8 * 32 * 224 * 224 * 4 // 4096


def _steady_state(mode: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", FORWARD_PASSES, mode], capture_output=True, text=True, check=True)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the allocator knobs are glibc's")
def test_reuse_runs_each_forward_pass_in_memory_already_faulted_in() -> None:
    system, reuse = _steady_state("system"), _steady_state("reuse")
    assert system["changed"] is False and system["faults"] >= ACTIVATION_PAGES  # each pass maps its memory anew
    assert reuse["changed"] is True and reuse["faults"] < ACTIVATION_PAGES / 20


def test_system_changes_nothing() -> None:
    assert configure_allocator("system") is False


FREEZE = """
import gc, torch
from moderation.allocator import freeze_loaded_objects
loaded = torch.nn.Linear(4, 4)
freeze_loaded_objects()
batch = [{"post": n} for n in range(10)]
walked = gc.get_objects()
print(gc.get_freeze_count(), gc.is_tracked(batch), any(o is loaded for o in walked), any(o is batch for o in walked))
"""


def test_freezing_hides_what_was_loaded_from_the_collector_but_not_what_comes_after() -> None:
    out = subprocess.run([sys.executable, "-c", FREEZE], capture_output=True, text=True, check=True)
    frozen, tracked, loaded_walked, batch_walked = out.stdout.split()
    assert int(frozen) > 1000  # torch's modules and the rest of what was imported
    assert (tracked, loaded_walked, batch_walked) == ("True", "False", "True")
