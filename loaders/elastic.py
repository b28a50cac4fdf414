"""What a loader's state must match to be resumed, and a check over the states of all ranks of a job.

Any one rank's state is enough to resume on any number of ranks: ranks of a data-parallel job advance together,
so one rank's (epoch, batch) says what every rank has read, and the plan (loaders/plan.py) turns that into the
consumed part of the epoch. `merge_states` is for checkpoint code that saves every rank's state: it checks that
they agree and returns one to give to every rank of the resumed job.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = [
    "check_data",
    "check_elastic",
    "check_plan",
    "check_state",
    "check_state_shape",
    "data_digest",
    "fingerprint",
    "merge_states",
]


def fingerprint(specs: Sequence[Any], epoch_size: int | None, open_shards: int) -> dict[str, Any]:
    """What fixes the epoch's global order besides the seed: the sources, their shares, the epoch size."""
    return {
        "sources": [[s.url, s.weight, s.samples, s.repeat, s.subset] for s in specs],
        "epoch_size": epoch_size,
        "open_shards": open_shards,
    }


def data_digest(manifest: dict[str, Any]) -> str:
    """What identifies the samples a manifest holds: its shards' checksums, in order. A split replaced at the same
    URL (re-converted, or another dataset) has another digest, so a state saved over the old one is refused. A
    split whose shards are listed in a shard table (shards/table.py) is identified by the table's sha256."""
    import hashlib

    if "shard_table" in manifest:
        return str(manifest["shard_table"]["sha256"])[:32]

    h = hashlib.sha256()
    for s in manifest["shards"]:
        h.update(f"{s['path']} {s['sha256']} {s['num_samples']}\n".encode())
    return h.hexdigest()[:32]


def _whole(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def check_state_shape(state: Any) -> None:
    """ValueError naming the key when a state is not one a loader saved (a hand-edited or corrupted one)."""
    if not isinstance(state, dict):
        raise ValueError(f"state must be the dict state_dict() returned, not a {type(state).__name__}")
    for k in ("epoch", "batch", "batch_size", "seed", "world_size", "rank"):
        if k not in state:
            raise ValueError(f"state lacks {k!r}: not a state a loader saved")
        if not _whole(state[k]) and not (k == "seed" and isinstance(state[k], int)):
            raise ValueError(f"state's {k} is {state[k]!r}, not a whole number >= 0")
    if state["batch_size"] < 1 or state["world_size"] < 1 or state["rank"] >= state["world_size"]:
        raise ValueError(
            f"state's batch_size {state['batch_size']}, world_size {state['world_size']} and rank "
            f"{state['rank']} do not fit together"
        )


def check_data(state: dict[str, Any], urls: Sequence[str], manifests: Sequence[dict[str, Any]]) -> None:
    """ValueError unless the state was saved over the data these manifests hold (states without `data` predate
    the digest and pass)."""
    if "data" not in state:
        return
    changed = [u for u, a, m in zip(urls, state["data"], manifests, strict=False) if a != data_digest(m)]
    if changed or len(state["data"]) != len(manifests):
        raise ValueError(
            f"state was saved over other data than {', '.join(changed) or 'these sources'} holds now (its shards "
            "differ: the split was replaced at the same URL since); it cannot resume here - start a new epoch"
        )


def check_elastic(state: dict[str, Any], consumed: Sequence[tuple[int, int]], total: int) -> None:
    """ValueError unless an elastic resume's consumed intervals and batch fit an epoch of `total` samples."""
    if any(not 0 <= a < b <= total for a, b in consumed):
        raise ValueError(f"state's consumed intervals {list(consumed)[:3]}... lie outside the epoch's {total} samples")
    per_rank = (total - sum(b - a for a, b in consumed)) // state["world_size"]
    if state["batch"] * state["batch_size"] > per_rank:
        raise ValueError(
            f"state's batch {state['batch']} is past the end of its epoch ({per_rank} samples per rank "
            f"of {state['world_size']}): not a state this split can give"
        )


def check_plan(state: dict[str, Any], version: int) -> None:
    """ValueError when `state` was saved by a plan (loaders/plan.py's `PLAN_VERSION`) whose order differs from this
    one's for its sources. States without a version are version 1: the same order, but for subsets."""
    theirs = state.get("plan", 1)
    if not _whole(theirs) or theirs < 1:
        raise ValueError(f"state's plan is {theirs!r}, not a plan version (a whole number >= 1)")
    subsets = [s[0] for s in (state.get("mixture") or {}).get("sources", []) if s[4] is not None]
    if theirs != version and (theirs > version or (theirs == 1 and subsets)):
        raise ValueError(
            f"state was saved by plan version {theirs}, which orders {', '.join(subsets) or 'the epoch'} "
            f"differently from this loader's plan version {version}, so the epoch cannot resume exactly - start "
            "the next epoch without it"
        )


def check_state(state: dict[str, Any], seed: int, mine: dict[str, Any], version: int) -> None:
    """ValueError naming what differs when `state` is from another seed, mixture, epoch size or plan."""
    check_state_shape(state)
    check_plan(state, version)
    if state["seed"] != seed:
        raise ValueError(f"state was saved with seed={state['seed']}, this loader has seed={seed}")
    theirs = state.get("mixture")
    if theirs is None:  # a state from before mixtures: one source, nothing more to compare
        return
    a, b = theirs["sources"], mine["sources"]
    if len(a) != len(b):
        raise ValueError(f"state is from a mixture of {len(a)} source(s), this loader has {len(b)}")
    names = ("url", "weight", "samples", "repeat", "subset")
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        diff = [f"{n}={u!r} in the state, {v!r} here" for n, u, v in zip(names, x, y, strict=True) if u != v]
        if diff:
            raise ValueError(f"state is from another mixture: source {i} ({y[0]}) has " + "; ".join(diff))
    for k in ("epoch_size", "open_shards"):
        if theirs[k] != mine[k]:
            raise ValueError(f"state was saved with {k}={theirs[k]}, this loader has {k}={mine[k]}")


def merge_states(states: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One state for a resumed job from every rank's: ValueError unless they come from one job at one point."""
    if not states:
        raise ValueError("no states given")
    keys = ("plan", "epoch", "batch", "batch_size", "seed", "world_size", "generations", "consumed", "mixture")
    first = states[0]
    for s in states[1:]:
        diff = [k for k in keys if s.get(k) != first.get(k)]
        if diff:
            raise ValueError(f"rank {s.get('rank')}'s state differs from rank {first.get('rank')}'s in {diff}")
    ranks = sorted(s["rank"] for s in states)
    if ranks != list(range(first["world_size"])):
        raise ValueError(
            f"states of ranks {ranks} given; a job of {first['world_size']} ranks has 0..{first['world_size'] - 1}"
        )
    return dict(first)
