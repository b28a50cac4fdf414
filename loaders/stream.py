"""`python -m loaders.stream imagenet URL`: stream a split through its DALI loader and print images/s."""

from __future__ import annotations

import sys
import time

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    import loaders
    from shards.cli import OneLineParser

    p = OneLineParser(prog="python -m loaders.stream", description=__doc__.split("\n")[0])
    p.add_argument("dataset", choices=loaders.available())
    p.add_argument("url", help="split folder or manifest URL")
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--eval", action="store_true", help="the eval graph instead of the train graph")
    p.add_argument("--cache-dir", help="local cache for remote shards (default: a temporary folder)")
    p.add_argument("--json", help="write per-epoch figures here")
    args = p.parse_args(argv)
    make = getattr(loaders, f"{args.dataset}_dali")
    try:
        loader = make(
            args.url, batch_size=args.batch_size, train=not args.eval, device=args.device, cache_dir=args.cache_dir
        )
    except (ValueError, OSError) as e:  # a bad argument or an unreadable split: one line, exit 2
        print(f"error: {e}", file=sys.stderr)
        return 2
    per_epoch = len(loader) * args.batch_size
    total = loader.manifest["num_samples"]
    print(
        f"{args.dataset}: {len(loader)} batches of {args.batch_size} per epoch on {args.device}: {per_epoch} of the "
        f"split's {total} samples each epoch"
        + (
            f"; {total - per_epoch} left out (the last partial batch: drop_last; different samples each epoch, "
            "as the order changes)"
            if total > per_epoch
            else ""
        )
    )
    epochs = []
    for epoch in range(args.epochs):
        t0, n, fetched = time.perf_counter(), 0, loader.cache.bytes_fetched
        for batch in loader:
            first = next(iter(batch.values()))
            n += len(first)
        dt = time.perf_counter() - t0
        fetched = loader.cache.bytes_fetched - fetched
        epochs.append({"epoch": epoch, "samples": n, "seconds": dt, "samples_per_s": n / dt, "bytes_fetched": fetched})
        note = " (includes start-up: the pipeline's build and first reads)" if epoch == 0 else " (warm)"
        print(
            f"epoch {epoch}: {n} samples in {dt:.1f}s = {n / dt:,.0f} samples/s{note}; {fetched / 1e6:.1f} MB fetched; "
            f"batch {tuple(first.shape)} {first.dtype}"
        )
    if args.json:
        import json

        with open(args.json, "w") as f:
            json.dump(
                {"url": args.url, "device": args.device, "batch_size": args.batch_size, "epochs": epochs}, f, indent=1
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
