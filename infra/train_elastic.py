"""A worked example: train on a mixture of splits on several ranks, checkpoint, and resume on another number.

    # 2 ranks on the CPU (gloo), stop after 6 steps with a checkpoint:
    python -m torch.distributed.run --nproc-per-node=2 infra/train_elastic.py \\
        --source out/train=3 --source other/train=1 --epoch-size 2000 --steps 6 --checkpoint ckpt.pt
    # resume the same epoch on 3 ranks: the samples all ranks read before are not read again
    python -m torch.distributed.run --nproc-per-node=3 infra/train_elastic.py \\
        --source out/train=3 --source other/train=1 --epoch-size 2000 --checkpoint ckpt.pt --resume

A tiny CNN on 32x32 crops (on the GPU with `--device gpu` and NCCL), wrapped in DistributedDataParallel. The
checkpoint holds the model, the optimizer and one rank's loader state: any one is enough, since ranks advance
together (`loaders.merge_states` checks a set of them). `--keys-out DIR` writes each rank's sample keys and sources.
"""

from __future__ import annotations

import argparse
import json
import os

import torch
import torch.distributed as dist

from loaders import Source, imagenet_dali, mix

__all__ = ["main"]


class TinyNet(torch.nn.Module):
    def __init__(self, classes: int):
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, 3, stride=2, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1)
        )
        self.head = torch.nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def _source(text: str) -> Source:
    url, _, weight = text.rpartition("=")
    if not url:
        raise argparse.ArgumentTypeError(f"{text!r} is not URL=WEIGHT")
    return Source(url, weight=float(weight))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--source", type=_source, action="append", required=True, help="URL=WEIGHT, repeatable")
    p.add_argument("--epoch-size", type=int, help="samples per epoch across all ranks")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--steps", type=int, help="stop after this many steps of this run, writing the checkpoint")
    p.add_argument("--batch-size", type=int, default=16, help="per rank")
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--resume", action="store_true", help="start from --checkpoint")
    p.add_argument("--keys-out", help="folder for each rank's keys and sources (a JSON file per rank)")
    args = p.parse_args(argv)

    gpu = args.device == "gpu"
    dist.init_process_group("nccl" if gpu else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    if gpu:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    torch.manual_seed(0)
    loader = imagenet_dali(mix(*args.source), batch_size=args.batch_size, train=True, device=args.device,
                           image_size=32, epoch_size=args.epoch_size, return_keys=True, num_threads=1)  # fmt: skip
    model = TinyNet(len(loader.manifest["classes"]))
    model = torch.nn.parallel.DistributedDataParallel(model.cuda() if gpu else model)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    if args.resume:
        ckpt = torch.load(args.checkpoint, map_location="cuda" if gpu else "cpu", weights_only=False)
        model.module.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["opt"])
        loader.load_state_dict(ckpt["loader"])  # saved on another number of ranks: the epoch goes on elastically
    log: list = []
    steps, done = 0, False
    while not done:
        for batch in loader:  # one epoch (the rest of it, after a resume)
            loss = torch.nn.functional.cross_entropy(model(batch["image"]), batch["label"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            log.append([loader.epoch, list(batch["key"]), batch["source"].tolist()])
            steps += 1
            if rank == 0 and steps % 10 == 0:
                print(f"epoch {loader.epoch} step {steps} loss {loss.item():.3f}", flush=True)
            if steps == args.steps:
                done = True
                break
        else:
            done = loader.epoch + 1 >= args.epochs
    if rank == 0:
        torch.save({"model": model.module.state_dict(), "opt": opt.state_dict(), "loader": loader.state_dict()},
                   args.checkpoint)  # fmt: skip
    if args.keys_out:
        os.makedirs(args.keys_out, exist_ok=True)
        with open(os.path.join(args.keys_out, f"rank{rank}-of-{world}.json"), "w") as f:
            json.dump(log, f)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
