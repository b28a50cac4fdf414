"""`python -m infra.same_output --base DIR`: every registered dataset job, on the tests' fake raw data in every
layout, run by two checkouts (this one and `--base`, e.g. a `git worktree` of the commit before a refactor) into
two folders; the outputs must be the same byte for byte, and so must each job's stdout and exit status.

A refactor's check that no output byte changed (README, Layout): what the conformance suite converts, compared
file by file (sha256 of every file under the output; the live progress line is off, the summary lines compared).

    git worktree add /tmp/base HEAD~3 && python -m infra.same_output --base /tmp/base
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["main", "tree_digest"]

ROOT = Path(__file__).resolve().parents[1]


def tree_digest(root: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under `root`."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _run(checkout: Path, dataset: str, raw: Path, out: Path, extra: list[str]) -> tuple[int, str]:
    cmd = [sys.executable, "-m", "pipelines", dataset, "--input", str(raw), "--output", str(out)]
    cmd += ["--min-shards", "2", "--max-bad-fraction", "0.5", "--no-progress", *extra]
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    r = subprocess.run(cmd, cwd=checkout, capture_output=True, text=True, timeout=900, env=env)
    return r.returncode, r.stdout.replace(str(out), "<out>")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m infra.same_output", description=__doc__.split("\n\n")[0])
    p.add_argument("--base", required=True, help="the other checkout (a git worktree of the commit to compare)")
    p.add_argument("--datasets", help="comma-separated (default: every registered job)")
    args = p.parse_args(argv)
    base = Path(args.base).resolve()
    import pipelines

    names = args.datasets.split(",") if args.datasets else pipelines.available()
    differ = 0
    with tempfile.TemporaryDirectory(prefix="same-output-") as tmp:
        for dataset in names:
            raw_module = importlib.import_module(f"tests.raw.{dataset}")
            for layout, write in raw_module.LAYOUTS.items():
                work = Path(tmp) / f"{dataset}-{layout}"
                raw = write(work / "raw")
                extra = [
                    *getattr(raw_module, "EXTRA_ARGS", []),
                    *getattr(raw_module, "LAYOUT_ARGS", {}).get(layout, []),
                ]
                runs, trees = [], []
                for checkout, name in ((base, "base"), (ROOT, "this")):  # the same output path for both: paths
                    runs.append(_run(checkout, dataset, raw, work / "out", extra))  # under it reach the records
                    trees.append(tree_digest(work / "out"))
                    (work / "out").rename(work / name)
                same = runs[0] == runs[1] and trees[0] == trees[1]
                differ += not same
                changed = sorted(k for k in trees[0].keys() | trees[1].keys() if trees[0].get(k) != trees[1].get(k))
                print(
                    f"{dataset:>10} {layout:<14} exit {runs[0][0]}/{runs[1][0]}  {len(trees[1]):4d} files  "
                    + ("same bytes" if same else f"DIFFERENT: {changed[:5] or 'stdout'}"),
                    flush=True,
                )
    print(f"{'all outputs the same' if not differ else f'{differ} run(s) differ'}")
    return 1 if differ else 0


if __name__ == "__main__":
    raise SystemExit(main())
