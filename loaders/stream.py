"""`python -m loaders.stream imagenet URL`: stream a split through its DALI loader and print images/s."""

from __future__ import annotations

import argparse
import time

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    import loaders

    p = argparse.ArgumentParser(prog="python -m loaders.stream", description=__doc__.split("\n")[0])
    p.add_argument("dataset", choices=loaders.available())
    p.add_argument("url", help="split folder or manifest URL")
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--eval", action="store_true", help="the eval graph instead of the train graph")
    args = p.parse_args(argv)
    make = getattr(loaders, f"{args.dataset}_dali")
    loader = make(args.url, batch_size=args.batch_size, train=not args.eval, device=args.device)
    print(f"{args.dataset}: {len(loader)} batches of {args.batch_size} per epoch on {args.device}")
    for epoch in range(args.epochs):
        t0, n = time.perf_counter(), 0
        for batch in loader:
            n += len(batch["label"])
        dt = time.perf_counter() - t0
        shape = tuple(batch["image"].shape)
        print(f"epoch {epoch}: {n} images in {dt:.1f}s = {n / dt:,.0f} images/s; batch {shape} {batch['image'].dtype}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
