"""A minimal multi-node training loop over shards on object storage: ResNet-50 on `imagenet_dali`, under torchrun.

    torchrun --nnodes=2 --nproc-per-node=8 --node-rank=$RANK0 --rdzv-endpoint=$HOST:29500 \\
        infra/train_example.py s3://BUCKET/imagenet/train --epochs 1

Each process drives one GPU; the loader takes rank and world size from torch.distributed, so ranks read
disjoint shards and get the same number of batches. Used by infra/k8s/train-job.yaml; see README.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.distributed as dist
import torchvision

from loaders import imagenet_dali

__all__ = ["main"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("url", help="split written by `python -m pipelines imagenet` (s3://, gs://, or a path)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=256, help="per GPU")
    p.add_argument("--cache-dir", default="/cache", help="local disk for shard copies (default /cache)")
    args = p.parse_args()

    dist.init_process_group("nccl")
    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    model = torchvision.models.resnet50().cuda().to(memory_format=torch.channels_last)
    model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[local_rank])
    opt = torch.optim.SGD(model.parameters(), lr=0.1 * dist.get_world_size() * args.batch_size / 256, momentum=0.9)
    loader = imagenet_dali(
        args.url, batch_size=args.batch_size, train=True, device="gpu", cache_dir=args.cache_dir, channels_last=True
    )
    for epoch in range(args.epochs):  # each pass over the loader is the next epoch, reshuffled
        start, seen = time.perf_counter(), 0
        for step, batch in enumerate(loader):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = torch.nn.functional.cross_entropy(model(batch["image"]), batch["label"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += batch["label"].numel()
            if step % 100 == 0 and dist.get_rank() == 0:
                rate = seen * dist.get_world_size() / (time.perf_counter() - start)
                print(f"epoch {epoch} step {step}/{len(loader)} loss {loss.item():.3f} {rate:.0f} images/s", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
