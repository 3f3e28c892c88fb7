"""The process state of a launched job (``accelerate launch`` / ``torchrun``), CPU launches included."""

from __future__ import annotations

import os


def launch_state():
    """accelerate's ``PartialState`` for this process.

    ``PartialState()`` alone ignores ``ACCELERATE_USE_CPU`` (only ``Accelerator``
    reads it): created first on CPU-launched processes, it would leave each
    process thinking it runs alone, and every later ``Accelerator`` would share
    that state. So it is created here, with the flag read.
    """
    from accelerate import PartialState

    return PartialState(cpu=os.environ.get("ACCELERATE_USE_CPU", "false").lower() in ("1", "true", "yes"))
