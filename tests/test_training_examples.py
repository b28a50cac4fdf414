"""The worked examples run: the mixture training script checkpointed on 2 ranks and resumed on 3 (torchrun,
gloo on the CPU), and the Lightning data module resuming mid-epoch from a Lightning checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.splits import make_split, photo_shards

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def two_splits(tmp_path_factory) -> list[str]:
    root = tmp_path_factory.mktemp("examples")
    for name, sizes in (("a", [20, 18, 22, 20]), ("b", [15, 17])):
        make_split(str(root / name), photo_shards(name, sizes))
    return [str(root / "a"), str(root / "b")]


def test_mixture_training_checkpointed_on_2_ranks_resumes_on_3(two_splits, tmp_path):
    script = str(ROOT / "infra" / "train_elastic.py")
    args = ["--source", f"{two_splits[0]}=2", "--source", f"{two_splits[1]}=1", "--epoch-size", "96",
            "--batch-size", "8", "--checkpoint", str(tmp_path / "ckpt.pt"), "--keys-out", str(tmp_path / "keys")]  # fmt: skip
    for world, extra in ((2, ["--steps", "2"]), (3, ["--resume"])):
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={world}", script, *args, *extra]
        # torchrun keeps a log folder in the temp dir, left there after each run: this test's own temp dir
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path,
                           env={**os.environ, "TMPDIR": str(tmp_path)})  # fmt: skip
        assert r.returncode == 0, r.stderr[-3000:]
    logs = {p.name: json.loads(p.read_text()) for p in (tmp_path / "keys").glob("*.json")}
    before = [k for name, log in logs.items() if name.endswith("-of-2.json") for _, keys, _ in log for k in keys]
    after = [k for name, log in logs.items() if name.endswith("-of-3.json") for _, keys, _ in log for k in keys]
    assert len(before) == 2 * 2 * 8
    assert len({len(log) for name, log in logs.items() if name.endswith("-of-3.json")}) == 1  # equal batches
    assert len(before) + len(after) == len(set(before) | set(after)), "a sample read twice in the epoch"
    assert 96 - len(before) - len(after) < 3 * 8 + 3  # the rest of the epoch, but for the remainder
    sources = [(k[0], s) for log in logs.values() for _, keys, srcs in log for k, s in zip(keys, srcs, strict=True)]
    assert all(x == ("a", 0) or x == ("b", 1) for x in sources)


def test_lightning_data_module_resumes_mid_epoch_from_a_checkpoint(two_splits, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))  # torch makes it on Lightning's import
    L = pytest.importorskip("lightning", reason="the Lightning snippet needs `pip install lightning` (dev extra)")
    import torch

    from infra.lightning_example import ShardsDataModule
    from infra.train_elastic import TinyNet

    class Model(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net, self.keys = TinyNet(3), []

        def training_step(self, batch, _):
            self.keys.append(list(batch["key"]))
            return torch.nn.functional.cross_entropy(self.net(batch["image"]), batch["label"])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    def fit(ckpt=None, callbacks=()):
        dm = ShardsDataModule(two_splits[0], batch_size=8, device="cpu", image_size=32, return_keys=True,
                              num_threads=1, seed=4)  # fmt: skip
        model = Model()
        trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, max_epochs=2,
                            enable_model_summary=False, callbacks=list(callbacks),
                            enable_checkpointing=bool(callbacks))  # fmt: skip
        trainer.fit(model, datamodule=dm, ckpt_path=ckpt)
        return model.keys

    # a checkpoint every 14 steps: one lands mid-way through the second epoch (80 samples, 10 batches an epoch)
    every = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=14, save_top_k=-1)
    whole = fit(callbacks=[every])
    assert len(whole) == 20
    (mid,) = tmp_path.glob("*step=14.ckpt")
    assert fit(ckpt=str(mid)) == whole[14:]
