"""`core.allocator.keep_freed_memory`: freed memory is reused, not faulted in again.

Each check runs in a fresh interpreter (the settings are per process, and this one may
have set them already). The probe touches a 20 MiB buffer twice, freeing it between:
glibc by default maps the first one (above its 128 KiB mmap threshold) and unmaps it on
free, then serves the second from a heap it has to grow: every page is faulted in both
times (the count is the kernel's: it may map several pages a fault). With the settings,
the second reuses the first's pages.
"""

import json
import os
import platform
import subprocess
import sys

import pytest

from daian_tf.core import allocator

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="the settings are glibc's")

PROBE = """
import json, resource, numpy as np
from daian_tf.core.allocator import keep_freed_memory
applied = keep_freed_memory()
def faults_of_touch():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    buffer = np.ones(5 << 20, np.float32)  # 20 MiB, every page written
    after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    del buffer
    return after - before
first = faults_of_touch()
print(json.dumps({"applied": applied, "first": first, "second": faults_of_touch(),
                  "again": keep_freed_memory()}))
"""


def probe(**env) -> dict:
    environment = {k: v for k, v in os.environ.items()
                   if k not in (allocator.ENV_SWITCH, "GLIBC_TUNABLES")}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**environment, **env},
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_freed_buffer_is_reused_without_page_faults():
    result = probe()
    assert result["applied"] == {"mmap_threshold": 32 << 20, "trim_threshold": 1 << 30}
    assert result["again"] == result["applied"]
    assert result["first"] >= 100, result  # new pages, faulted in
    assert result["second"] < 0.05 * result["first"], result


def test_switched_off_glibc_faults_the_pages_in_again():
    """What the setting changes (and that the probe can tell)."""
    result = probe(**{allocator.ENV_SWITCH: "0"})
    assert result["applied"] is None
    assert result["first"] >= 100, result
    assert result["second"] >= 0.5 * result["first"], result


def test_glibc_tunables_value_sets_the_same_at_start():
    """The Dockerfile's environment (a process that never calls us) gets the same."""
    result = probe(**{allocator.ENV_SWITCH: "0",
                      "GLIBC_TUNABLES": allocator.GLIBC_TUNABLES_VALUE})
    assert result["first"] >= 100, result
    assert result["second"] < 0.05 * result["first"], result
