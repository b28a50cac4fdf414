"""Small tensor helpers the loaders share: argument checks, label parsers and makers, DALI outputs as torch."""

from __future__ import annotations

from typing import Any

import numpy as np

from loaders.reading import Ragged

__all__ = ["class_label", "multi_hot", "positive", "to_torch"]


def positive(name: str, value: Any) -> None:
    """Raise a clear ValueError unless `value` is a whole number of at least 1 (sizes, counts)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a whole number of at least 1, not {value!r}")


def class_label(data) -> np.ndarray:
    """A `cls` member (ASCII decimal; bytes or a uint8 view) as DALI's int64 input: a `host_fields` parser."""
    return np.array([int(bytes(data))], dtype=np.int64)


def multi_hot(labels: Ragged, num_classes: int, device: str):
    """A batch's label ids as one N x classes float32 tensor on `device`, made by one scatter: on the GPU by torch
    there (only the ids cross PCIe); on the CPU by NumPy, since a torch op here would wake torch's OpenMP pool,
    whose spinning threads take the cores from DALI's (measured: 1.7x slower). A `tensor_fields` maker."""
    import torch

    rows, ids = labels.row_ids(), labels.values.astype(np.int64, copy=False)
    if ids.size and (ids.min() < 0 or ids.max() >= num_classes):
        bad = sorted(set(ids[(ids < 0) | (ids >= num_classes)].tolist()))
        raise ValueError(f"label ids outside 0..{num_classes - 1}: {bad}")
    if device == "cpu":
        hot = np.zeros((len(labels.lengths), num_classes), np.float32)
        hot[rows, ids] = 1.0
        return torch.from_numpy(hot)
    hot = torch.zeros((len(labels.lengths), num_classes), dtype=torch.float32, device=device)
    hot[torch.from_numpy(rows).to(device), torch.from_numpy(ids).to(device)] = 1.0
    return hot


def to_torch(out: Any, copy: bool):
    """A DALI output as a torch tensor. Under DALI's dynamic executor (the default since DALI 1.44) outputs are
    reference-counted and never recycled, so the tensor shares DALI's buffer through DLPack, as DALI's own PyTorch
    plugin does; otherwise DALI reuses its buffers and the batch is copied out (on the CPU through NumPy, measured
    faster here than feed_ndarray into a fresh tensor)."""
    import torch

    if not out.is_dense_tensor():
        raise ValueError("the graph produced samples of different shapes; add a resize or crop")
    t = out.as_tensor()
    gpu = type(out).__name__ == "TensorListGPU"
    if not copy:
        if not gpu:
            return torch.from_dlpack(t)
        with torch.device(f"cuda:{t.device_id()}"):  # torch's current stream there waits for DALI's
            return torch.from_dlpack(t)
    if gpu:
        from nvidia.dali.plugin.pytorch import feed_ndarray, to_torch_type

        dst = torch.empty(t.shape(), dtype=to_torch_type[t.dtype], device="cuda")
        feed_ndarray(t, dst, cuda_stream=torch.cuda.current_stream())
        return dst
    return torch.from_numpy(np.array(t))
