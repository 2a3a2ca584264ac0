"""Process settings of the entry points (sashimi/runtime.py)."""
import sys

import pytest

from sashimi import runtime


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_tune_malloc_applies_on_glibc_and_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("SASHIMI_MALLOC_TUNE", "0")
    assert runtime.tune_malloc() is False
    monkeypatch.setenv("SASHIMI_MALLOC_TUNE", "1")
    assert runtime.tune_malloc() is True
    big = bytearray(64 * 2**20)  # allocations still work either side of the threshold
    small = bytearray(4 * 2**20)
    assert len(big) + len(small) == 68 * 2**20
