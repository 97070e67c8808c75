"""Sets of guest pages as sorted numpy arrays of page indices: the dirty logs the vCPU process
reports and the teleport's copy rounds send."""

from __future__ import annotations

import numpy as np


def merge_pages(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Sorted unique page indices of both. (np.union1d's first call imports numpy.ma, ~8 ms: too
    slow for a teleport's stop-and-copy.)"""
    both = np.sort(np.concatenate((a, b)))
    return both[np.concatenate(([True], both[1:] != both[:-1]))] if len(both) else both
