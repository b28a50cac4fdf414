"""The device the `gpu`-marked tests run their graphs on: "gpu", or "cpu" when SHARDKIT_GPU_TESTS_ON=cpu.

The CPU setting exists for rehearsing the GPU check on a machine without one (`infra/gpu/rehearse.sh`): the same
tests, fixtures and comparisons run, so that the only thing left unknown on the GPU machine is the GPU itself.
"""

from __future__ import annotations

import os

__all__ = ["GPU", "FORCED_TO_CPU", "on_gpu"]

GPU = "cpu" if os.environ.get("SHARDKIT_GPU_TESTS_ON") == "cpu" else "gpu"
FORCED_TO_CPU = GPU == "cpu"


def on_gpu(tensor) -> bool:
    """Whether a batch tensor sits where the `gpu` tests expect it (on the CPU when forced there)."""
    return tensor.device.type == ("cpu" if FORCED_TO_CPU else "cuda")
