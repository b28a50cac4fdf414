"""What every DALI loader shares: the external source over planned samples (reading: loaders/reading.py) and the
iterator (exact `len`, `state_dict()`/`load_state_dict()`, errors that name the shard and the key).

A dataset module supplies only its DALI graph: a function from the encoded fields (DataNodes) to named outputs.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from loaders.cache import ShardCache
from loaders.elastic import check_data, check_elastic, check_state, data_digest, fingerprint
from loaders.integrity import Verifier
from loaders.mixture import Mixture, Source, open_sources
from loaders.plan import PLAN_VERSION, consumed_after, plan_epoch
from loaders.preflight import refuse_unpinned, require_gpu
from loaders.source import BatchSource
from loaders.spec import LoaderOptions, ReadSpec
from loaders.tensors import class_label, multi_hot, positive, to_torch
from shards.errors import ShardFormatError
from shards.generations import generation_of
from shards.manifest import read_manifest, split_url_of

__all__ = ["DaliLoader", "LoaderOptions", "ReadSpec", "class_label", "multi_hot", "positive", "resolve_rank"]


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


class DaliLoader:
    """Iterates dict batches of torch tensors built by a DALI graph over planned samples of a split.

    `graph(encoded: dict[input, DataNode], device: str) -> dict[name, DataNode]` is the dataset's part, and `read`
    (a `ReadSpec`) what it reads; `options` are the ones every loader takes (`LoaderOptions`).
    """

    def __init__(
        self,
        url: str | Mixture,
        *,
        graph: Callable[[dict[str, Any], str], dict[str, Any]],
        read: ReadSpec,
        batch_size: int,
        device: str = "gpu",
        options: LoaderOptions | None = None,
    ):
        o = options or LoaderOptions()
        if device not in ("cpu", "gpu"):
            raise ValueError(f"device must be 'cpu' or 'gpu', not {device!r}")
        if device == "gpu":
            require_gpu()
        for name, value in (
            ("batch_size", batch_size),
            ("open_shards", o.open_shards),
            ("fetch_streams", o.fetch_streams),
            ("cache_bytes", o.cache_bytes),
        ):
            positive(name, value)
        self.mixture = url if isinstance(url, Mixture) else None
        self.rank, self.world_size = resolve_rank(o.rank, o.world_size)
        self.specs = _sources(url, o, self.world_size)
        self.epoch_size = o.epoch_size
        self.split_url = split_url_of(self.specs[0].url)
        self.follow = o.follow
        self.read = read
        self.fields = list(read.fields)
        self.batch_size = batch_size
        self.device = device
        self.seed = o.seed
        self.num_threads = o.num_threads or max(1, (os.cpu_count() or 2) // max(1, self._local_ranks()))
        self.drop_last = o.drop_last
        self.open_shards = o.open_shards
        self.return_keys = o.return_keys
        self.cache = ShardCache(o.cache_dir, o.cache_bytes, streams=o.fetch_streams)
        self.verifier = Verifier(o.verify)
        self._base: list[tuple[int, int]] = []  # what an elastic resume found consumed in epoch `_base_epoch`
        self._base_epoch = -1
        self._planner: ThreadPoolExecutor | None = None
        self._ahead: tuple[int, Any, Future] | None = None  # (epoch, the sources it plans over, its plan)
        self._planned: tuple[int, Any, list] | None = None  # (epoch, sources, consumed) of `_plan`
        self._open(self._newest(pinned=True))
        self._graph = graph
        self.epoch = 0
        self._source = BatchSource(read, batch_size, keys=o.return_keys, sources=self.mixture is not None)
        self._pipe = None
        self._checkpoint: str | None = None
        self._consumed = 0  # batches of the current epoch handed to the user
        self._plan_for(0)
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"{self.split_url}: rank {self.rank} of {self.world_size} reads {len(self._plan)} samples an "
                f"epoch, fewer than batch_size={batch_size}, so an epoch would yield no batch"
                + (" (drop_last=True drops the partial one)" if o.drop_last and len(self._plan) else "")
            )

    def _open(self, generations: Sequence[int | None]) -> None:
        """Read these generations of the sources from now on (at construction, an epoch boundary, a resume)."""
        self.manifests, self.reader, self._plans = open_sources(
            self.specs, generations, self.fields, self.cache, seed=self.seed, epoch_size=self.epoch_size
        )
        self.manifest = self.manifests[0]
        self.generations = [generation_of(m) for m in self.manifests]
        self.generation = self.generations[0]
        self._verified: set[int] = set()  # shards that passed (or need no check): no wait per batch

    def _newest(self, *, pinned: bool = False) -> list[int | None]:
        """Each source's generation to read: its pinned one (with `pinned`), else the newest as rank 0 sees it
        when the ranks are joined by torch.distributed (broadcast, so every rank reads the same), else the
        newest this process sees."""
        chosen = [s.generation if pinned else None for s in self.specs]
        if all(g is not None for g in chosen):
            return chosen
        joined = self.world_size > 1 and _distributed()
        if not joined or self.rank == 0:
            manifests = [
                None if g is not None else read_manifest(split_url_of(s.url))
                for g, s in zip(chosen, self.specs, strict=True)
            ]
            if self.world_size > 1 and not joined:
                refuse_unpinned(self.specs, manifests, self.rank, self.world_size)
            chosen = [g if g is not None else generation_of(m) for g, m in zip(chosen, manifests, strict=True)]
        if joined:
            import torch.distributed as dist

            box = [chosen]
            dist.broadcast_object_list(box, src=0)
            chosen = box[0]
        return chosen

    def _follow(self) -> None:
        """At an epoch boundary: move to the newest generations, if they are not the ones read now."""
        newest = self._newest()
        if newest != self.generations:
            self._open(newest)

    @staticmethod
    def _local_ranks() -> int:
        return int(os.environ.get("LOCAL_WORLD_SIZE", 1))

    def _plan_args(self, epoch: int) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "epoch": epoch,
            "world_size": self.world_size,
            "rank": self.rank,
            "open_shards": self.open_shards,
            "consumed": self._base if epoch == self._base_epoch else (),
        }

    def _plan_ahead(self) -> None:
        """The next epoch's plan, made in a background thread while this epoch's last batches are read (not with
        `follow=True`: the next epoch's generations are chosen at its start)."""
        if self.follow or self._ahead is not None:
            return
        if self._planner is None:
            self._planner = ThreadPoolExecutor(1, thread_name_prefix="epoch-planner")
        epoch = self.epoch + 1
        self._ahead = (epoch, self._plans, self._planner.submit(plan_epoch, self._plans, **self._plan_args(epoch)))

    def _plan_for(self, epoch: int) -> None:
        consumed = list(self._plan_args(epoch)["consumed"])
        done = self._planned
        if done is not None and done[0] == epoch and done[1] is self._plans and done[2] == consumed:
            return  # made already (at construction, for the first epoch)
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[0] == epoch and ahead[1] is self._plans and epoch != self._base_epoch:
            plan = ahead[2].result()  # made in the background over the same sources
        else:
            plan = plan_epoch(self._plans, **self._plan_args(epoch))
        self._plan, self._planned = plan, (epoch, self._plans, consumed)
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
                num_outputs=len(self.read.dali_inputs),
                batch=True,
                no_copy=True,
                dtype=[getattr(types, t) for t in self.read.dali_inputs.values()],
            )
            outputs = self._graph(dict(zip(self.read.dali_inputs, encoded, strict=True)), self.device)
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
        self._source.restart(self._plan, self._consumed, self.reader, self.batches_per_epoch)
        if self._pipe is None:
            self._build()
        else:
            self._pipe.reset()
        upcoming = [self.reader.job(s) for s in self._upcoming_shards()]
        self.cache.prefetch(upcoming)
        self.verifier.schedule(upcoming)
        return self._batches()

    def _upcoming_shards(self) -> list[int]:
        return list(dict.fromkeys(self._plan.shard[self._consumed * self.batch_size :].tolist()))

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
            batch = {n: to_torch(o, copy) for n, o in zip(self.output_names, outs, strict=True)}
            try:
                for name, (field, make) in self.read.tensor_fields.items():
                    batch[name] = make(self._source.produced[self._consumed][2][field], self._torch_device())
                if self.read.finish is not None:
                    self.read.finish(batch)
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
            if self.mixture is not None:  # which source each row came from
                import torch

                batch["source"] = torch.from_numpy(extra["__source__"].astype(np.int64)).to(self._torch_device())
            done = self._done_after.get(self._consumed, ())
            if done:  # the epoch has read these: the cache may evict them, the reader unmaps remote ones
                self.cache.release([self.reader.urls[s] for s in done])
                self.reader.forget(done)
            self._consumed += 1
            if self._consumed * 10 >= self.batches_per_epoch * 9:  # the last tenth of the epoch
                self._plan_ahead()
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
        """Where the epoch is: a fresh loader given this continues with exactly the batches this one would give;
        one on another number of ranks continues the epoch with what all ranks have not read yet (any one rank's
        state is enough: ranks advance together; `loaders.elastic.merge_states` checks a set of them)."""
        return {
            "plan": PLAN_VERSION,
            "epoch": self.epoch,
            "batch": self._consumed,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "world_size": self.world_size,
            "rank": self.rank,
            "generation": self.generation,
            "generations": list(self.generations),
            "consumed": [list(x) for x in (self._base if self.epoch == self._base_epoch else [])],
            "mixture": fingerprint(self.specs, self.epoch_size, self.open_shards),
            "data": [data_digest(m) for m in self.manifests],
            "dali": self._pipe.checkpoint() if self._pipe is not None else self._checkpoint,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        check_state(state, self.seed, fingerprint(self.specs, self.epoch_size, self.open_shards), PLAN_VERSION)
        generations = state.get("generations", [state.get("generation", 0)])
        if generations != self.generations:  # the epoch was planned over those generations
            self._open(generations)
        check_data(state, [split_url_of(s.url) for s in self.specs], self.manifests)
        self.epoch = state["epoch"]
        consumed = [(int(a), int(b)) for a, b in state.get("consumed", [])]
        if state["world_size"] == self.world_size:
            if state["rank"] != self.rank:
                raise ValueError(
                    f"state was saved by rank {state['rank']} of {self.world_size}; this is rank "
                    f"{self.rank} (give each rank its own state, or any one on a new number of ranks)"
                )
            if state["batch_size"] != self.batch_size:
                raise ValueError(
                    f"state was saved with batch_size={state['batch_size']}, this loader has "
                    f"batch_size={self.batch_size}"
                )
            self._base, self._consumed, self._checkpoint = consumed, state["batch"], state["dali"]
        else:  # elastic: what the old ranks read together is consumed; the rest is cut anew for these ranks
            total = sum(p.take for p in self._plans)
            check_elastic(state, consumed, total)
            self._base = consumed_after(total, consumed, state["world_size"], state["batch"] * state["batch_size"])
            self._consumed, self._checkpoint = 0, None  # DALI's random state was the old rank's: start afresh
        self._base_epoch = self.epoch
        self._pipe = None
        self._plan_for(self.epoch)
        if self._consumed > self.batches_per_epoch:
            raise ValueError(
                f"state's batch {state['batch']} is past the end of its epoch ({self.batches_per_epoch} "
                "batches): not a state this split and these options can give"
            )


def _sources(url: str | Mixture, o: LoaderOptions, world_size: int) -> tuple[Source, ...]:
    """The sources read (one, or a mixture's), the options that concern them checked."""
    if isinstance(url, Mixture) and (o.generation is not None or o.subset is not None):
        raise ValueError("with a mixture, give generation= and subset= to each Source")
    specs = url.sources if isinstance(url, Mixture) else (Source(url, generation=o.generation, subset=o.subset),)
    if o.epoch_size is not None:
        positive("epoch_size", o.epoch_size)
    if o.follow and any(s.generation is not None for s in specs):
        raise ValueError("follow=True moves to the newest generation at each epoch; do not also pin generation=")
    if o.follow and world_size > 1 and not _distributed():
        raise ValueError(
            "follow=True with several ranks needs torch.distributed initialised (rank 0's choice of generation "
            "is broadcast, so every rank reads the same one); without it, pass generation=N to every rank"
        )
    return specs


def _distributed() -> bool:
    try:
        import torch.distributed as dist

        return dist.is_available() and dist.is_initialized()
    except ImportError:
        return False
