"""torch's thread count, set by a command's ``--threads`` for that call only."""

from __future__ import annotations

import functools

import torch


def _restores_torch_threads(fn):
    """``--threads`` changes torch's thread count for the call only (a caller's later float results depend on it)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        threads = torch.get_num_threads()
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)

    return wrapper
