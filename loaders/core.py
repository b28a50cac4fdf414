"""What every DALI loader shares: the external source over planned samples (reading: loaders/reading.py) and the
iterator (exact `len`, `state_dict()`/`load_state_dict()`, errors that name the shard and the key).

A dataset module supplies only its DALI graph: a function from the encoded fields (DataNodes) to named outputs.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypedDict

import numpy as np

from loaders.cache import DEFAULT_STREAMS, ShardCache
from loaders.integrity import Verifier
from loaders.plan import plan_epoch
from loaders.reading import ArrowSampleReader, Ragged, SampleReader
from loaders.source import BatchSource
from shards.errors import ShardFormatError
from shards.generations import generation_of, read_generation
from shards.manifest import read_manifest, split_url_of

__all__ = ["DaliLoader", "LoaderOptions", "class_label", "multi_hot", "positive", "resolve_rank"]


def resolve_rank(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """Rank and world size: given, else torch.distributed when initialised, else RANK/WORLD_SIZE, else (0, 1)."""
    if rank is not None and world_size is not None:
        return rank, world_size
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    except ImportError:
        pass
    return int(os.environ.get("RANK", 0) if rank is None else rank), int(
        os.environ.get("WORLD_SIZE", 1) if world_size is None else world_size
    )


class LoaderOptions(TypedDict, total=False):
    """The options every dataset loader takes and hands to `DaliLoader` unchanged (defaults there)."""

    seed: int  # the plan's and DALI's seed (default 0)
    rank: int | None  # default: torch.distributed, else RANK, else 0
    world_size: int | None  # default: torch.distributed, else WORLD_SIZE, else 1
    num_threads: int | None  # DALI threads (default: the cores, shared among the node's ranks)
    cache_dir: str | None  # local cache for remote shards (default: a temporary one)
    cache_bytes: int  # its size limit (default 64 GiB)
    drop_last: bool  # default True: every batch full, the same count on every rank
    open_shards: int  # shards read at once per rank (default 8)
    return_keys: bool  # also give each batch's sample keys (default False)
    verify: bool  # check local shards against the manifest's sha256, once per process (default True)
    fetch_streams: int  # concurrent GETs per rank from an object store (default 8)
    generation: int | None  # a split that grows by generations: the one to read (default None: the newest)
    follow: bool  # plan each new epoch over the newest generation published by then (default False)


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


class DaliLoader:
    """Iterates dict batches of torch tensors built by a DALI graph over planned samples of a split.

    `graph(encoded: dict[ext, DataNode], device: str) -> dict[name, DataNode]` is the dataset's part.
    """

    def __init__(
        self,
        url: str,
        *,
        graph: Callable[[dict[str, Any], str], dict[str, Any]],
        fields: Sequence[str],
        batch_size: int,
        host_fields: dict[str, Callable[[bytes], np.ndarray]] | None = None,
        host_dtypes: dict[str, str] | None = None,
        tensor_fields: dict[str, tuple[str, Callable[[Any, str], Any]]] | None = None,
        device: str = "gpu",
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        num_threads: int | None = None,
        cache_dir: str | None = None,
        cache_bytes: int = 64 << 30,
        drop_last: bool = True,
        open_shards: int = 8,
        return_keys: bool = False,
        verify: bool = True,
        fetch_streams: int = DEFAULT_STREAMS,
        generation: int | None = None,
        follow: bool = False,
    ):
        if device not in ("cpu", "gpu"):
            raise ValueError(f"device must be 'cpu' or 'gpu', not {device!r}")
        for name, value in (("batch_size", batch_size), ("open_shards", open_shards), ("fetch_streams", fetch_streams),
                            ("cache_bytes", cache_bytes)):  # fmt: skip
            positive(name, value)
        self.split_url = split_url_of(url)
        self.rank, self.world_size = resolve_rank(rank, world_size)
        self.follow = follow
        if follow and generation is not None:
            raise ValueError("follow=True moves to the newest generation at each epoch; do not also pin generation=")
        if follow and self.world_size > 1 and not _distributed():
            raise ValueError(
                "follow=True with several ranks needs torch.distributed initialised (rank 0's choice of generation "
                "is broadcast, so every rank reads the same one); without it, pass generation=N to every rank"
            )
        self.manifest = read_generation(self.split_url, self._agreed(generation))
        self.generation = generation_of(self.manifest)
        self.fields = list(fields)
        # fields parsed in Python as they are read (small ones: labels, boxes); the rest reach DALI as bytes
        self.host_fields = dict(host_fields or {})
        self.host_dtypes = dict(host_dtypes or {})  # field -> DALI type name of its parsed array (default INT64)
        # outputs made from a field on the output device, not by DALI: {output: (field, make(column, device))},
        # where the column is the batch's values of the field (from Arrow: `reading.Ragged` for list columns).
        # DALI has no scatter, so multi-hot labels are built here from their few class ids (`multi_hot`; the
        # dense rows would be ~4x a YouTube-8M video's feature bytes through DALI's queues and over PCIe).
        self.tensor_fields = dict(tensor_fields or {})
        self.tensor_columns = {f for f, _ in self.tensor_fields.values()}
        self.dali_fields = [f for f in self.fields if f not in self.tensor_columns]
        missing = [f for f in self.fields if f not in self.manifest["fields"]]
        if missing:
            raise ValueError(
                f"{self.split_url}: the split has no field(s) {missing}; it has {list(self.manifest['fields'])}"
            )
        self.batch_size = batch_size
        self.device = device
        self.seed = seed
        self.num_threads = num_threads or max(1, (os.cpu_count() or 2) // max(1, self._local_ranks()))
        self.drop_last = drop_last
        self.open_shards = open_shards
        self.return_keys = return_keys
        self.cache = ShardCache(cache_dir, cache_bytes, streams=fetch_streams)
        self.verifier = Verifier(verify)
        self._use(self.manifest)
        self._graph = graph
        self.epoch = 0
        self._source = BatchSource(self)
        self._pipe = None
        self._checkpoint: str | None = None
        self._consumed = 0  # batches of the current epoch handed to the user
        self._plan_for(0)
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"{self.split_url}: rank {self.rank} of {self.world_size} reads {len(self._source.plan)} samples an "
                f"epoch, fewer than batch_size={batch_size}, so an epoch would yield no batch"
                + (" (drop_last=True drops the partial one)" if drop_last and len(self._source.plan) else "")
            )

    def _use(self, manifest: dict[str, Any]) -> None:
        """Read this manifest's shards from now on (at construction, an epoch boundary, or a resume)."""
        self.manifest, self.generation = manifest, generation_of(manifest)
        self._verified: set[int] = set()  # shards that passed (or need no check): no wait per batch
        arrow = bool(manifest["shards"]) and manifest["shards"][0]["path"].endswith(".arrow")
        self.reader = (ArrowSampleReader if arrow else SampleReader)(self.split_url, manifest, self.cache)

    def _agreed(self, generation: int | None) -> int | None:
        """The generation every rank reads: the one asked for, else (following, several ranks) the newest as rank
        0 sees it, broadcast; else None (the newest)."""
        if generation is not None or self.world_size == 1 or not _distributed():
            return generation
        import torch.distributed as dist

        choice = [generation_of(read_manifest(self.split_url)) if self.rank == 0 else None]
        dist.broadcast_object_list(choice, src=0)
        return choice[0]

    def _follow(self) -> None:
        """At an epoch boundary: move to the newest generation, if it is not the one read now."""
        newest = self._agreed(None)
        manifest = read_generation(self.split_url, newest)
        if generation_of(manifest) != self.generation:
            self._use(manifest)

    @staticmethod
    def _local_ranks() -> int:
        return int(os.environ.get("LOCAL_WORLD_SIZE", 1))

    def _plan_for(self, epoch: int) -> None:
        plan = plan_epoch(
            self.reader.sizes(),
            seed=self.seed,
            epoch=epoch,
            world_size=self.world_size,
            rank=self.rank,
            open_shards=self.open_shards,
        )
        self._source.plan = plan
        n = len(plan)
        self.batches_per_epoch = n // self.batch_size if self.drop_last else -(-n // self.batch_size)
        # batch -> the shards whose last planned sample it holds: after it, the cache may evict them again
        last = len(plan.shard) - 1 - np.unique(plan.shard[::-1], return_index=True)[1]
        self._done_after: dict[int, list[int]] = {}
        for shard, i in zip(np.unique(plan.shard[::-1]).tolist(), last.tolist(), strict=True):
            self._done_after.setdefault(i // self.batch_size, []).append(shard)

    def __len__(self) -> int:
        """Batches per epoch; the same on every rank."""
        return self.batches_per_epoch

    def _build(self) -> None:
        from nvidia.dali import fn, pipeline_def, types

        @pipeline_def(
            batch_size=self.batch_size,
            num_threads=self.num_threads,
            device_id=(self.rank % max(1, self._local_ranks())) if self.device == "gpu" else None,
            seed=self.seed + 7919 * self.rank,
            enable_checkpointing=True,
        )
        def pipe():
            encoded = fn.external_source(
                source=self._source,
                num_outputs=len(self.dali_fields),
                batch=True,
                no_copy=True,
                dtype=[
                    getattr(types, self.host_dtypes.get(f, "INT64")) if f in self.host_fields else types.UINT8
                    for f in self.dali_fields
                ],
            )
            outputs = self._graph(dict(zip(self.dali_fields, encoded, strict=True)), self.device)
            self.output_names = list(outputs)
            return tuple(outputs.values())

        with warnings.catch_warnings():  # the source's position is restored by this class, not by DALI
            warnings.filterwarnings("ignore", message=".*DALI doesn't capture state of such 'source'.*")
            self._pipe = pipe(checkpoint=self._checkpoint) if self._checkpoint else pipe()
            self._pipe.build()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self._pipe is not None and 0 < self._consumed < self.batches_per_epoch:
            return self._batches()  # an epoch left mid-way: carry on where it stopped
        if self._consumed >= self.batches_per_epoch:  # the last epoch is finished: start the next one
            self.epoch += 1
            self._consumed = 0
        if self.follow and self._consumed == 0:
            self._follow()
        self._plan_for(self.epoch)
        self._source.restart(self._source.plan, self._consumed)
        if self._pipe is None:
            self._build()
        else:
            self._pipe.reset()
        upcoming = [self.reader.job(s) for s in self._upcoming_shards()]
        self.cache.prefetch(upcoming)
        self.verifier.schedule(upcoming)
        return self._batches()

    def _upcoming_shards(self) -> list[int]:
        return list(dict.fromkeys(self._source.plan.shard[self._consumed * self.batch_size :].tolist()))

    def _batches(self) -> Iterator[dict[str, Any]]:
        while self._consumed < self.batches_per_epoch:
            try:
                outs = self._pipe.run()
            except StopIteration:
                break
            except ShardFormatError:
                raise
            except Exception as e:  # name the shards and keys of the batch DALI was working on
                raise ShardFormatError(
                    f"{e}\nwhile making batch {self._consumed} from {self._where(self._consumed)}", url=self.split_url
                ) from None
            copy = not getattr(self._pipe, "exec_dynamic", False)
            batch = {n: _to_torch(o, copy) for n, o in zip(self.output_names, outs, strict=True)}
            try:
                for name, (field, make) in self.tensor_fields.items():
                    batch[name] = make(self._source.produced[self._consumed][2][field], self._torch_device())
            except ValueError as e:
                raise ShardFormatError(
                    f"{e}\nwhile making batch {self._consumed} from {self._where(self._consumed)}", url=self.split_url
                ) from None
            shards, _, extra = self._source.produced.pop(self._consumed)
            if len(self._verified) < len(self.reader.urls):  # a shard that fails its check never reaches the caller
                for s in np.unique(shards).tolist():
                    if s not in self._verified:
                        self.verifier.wait(self.reader.job(s))
                        self._verified.add(s)
            if self.return_keys:
                batch["key"] = extra["__key__"]
            done = self._done_after.get(self._consumed, ())
            if done:  # the epoch has read these: the cache may evict them, the reader unmaps remote ones
                self.cache.release([self.reader.urls[s] for s in done])
                self.reader.forget(done)
            self._consumed += 1
            yield batch
        if self._consumed >= self.batches_per_epoch:
            with contextlib.suppress(StopIteration):  # let DALI see the epoch end, so reset() starts the next
                self._pipe.run()

    def _torch_device(self) -> str:
        return f"cuda:{self.rank % max(1, self._local_ranks())}" if self.device == "gpu" else "cpu"

    def _where(self, batch: int) -> str:
        shards, samples, _ = self._source.produced.get(batch, (np.zeros(0, int), np.zeros(0, int), {}))
        keys = [
            f"{self.reader.urls[s]}:{self.reader.key(s, i)}"
            for s, i in zip(shards.tolist(), samples.tolist(), strict=True)
        ]
        return ", ".join(keys) or "samples not yet known"

    def state_dict(self) -> dict[str, Any]:
        """Where the epoch is: a fresh loader given this continues with exactly the batches this one would give."""
        return {
            "epoch": self.epoch,
            "batch": self._consumed,
            "seed": self.seed,
            "world_size": self.world_size,
            "rank": self.rank,
            "generation": self.generation,
            "dali": self._pipe.checkpoint() if self._pipe is not None else self._checkpoint,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k in ("seed", "world_size", "rank"):
            if state[k] != getattr(self, k):
                raise ValueError(f"state was saved with {k}={state[k]}, this loader has {k}={getattr(self, k)}")
        if state.get("generation", 0) != self.generation:  # the epoch was planned over that generation
            self._use(read_generation(self.split_url, state.get("generation", 0)))
        self.epoch, self._consumed, self._checkpoint = state["epoch"], state["batch"], state["dali"]
        self._pipe = None
        self._plan_for(self.epoch)


def _distributed() -> bool:
    try:
        import torch.distributed as dist

        return dist.is_available() and dist.is_initialized()
    except ImportError:
        return False


def _to_torch(out: Any, copy: bool):
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
