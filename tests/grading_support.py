"""Helpers shared by the grading tests."""

from __future__ import annotations

import numpy as np


def never_raises(fn):
    """``fn`` with its ValueError swallowed: a wrong answer to a "must raise" check only."""
    def wrapped(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ValueError:
            return np.zeros(1)
    return wrapped
