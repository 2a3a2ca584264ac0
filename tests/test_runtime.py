"""Process settings of the entry points (sashimi/runtime.py)."""
import subprocess
import sys

import pytest

CHECK = """
import os, sys
from sashimi import runtime
os.environ["SASHIMI_MALLOC_TUNE"] = "0"
assert runtime.tune_malloc() is False
os.environ["SASHIMI_MALLOC_TUNE"] = "1"
assert runtime.tune_malloc() is True
big, small = bytearray(64 * 2**20), bytearray(4 * 2**20)  # allocations still work either side of the threshold
assert len(big) + len(small) == 68 * 2**20
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_tune_malloc_applies_on_glibc_and_can_be_turned_off():
    # in a child process: the setting is process-wide and would otherwise apply to the rest of the test session
    subprocess.run([sys.executable, "-c", CHECK], check=True, timeout=120)
