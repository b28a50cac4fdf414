"""`python -m loaders.bench DATASET|reading|mix|coco|cifar10|plan|startup ...`: the loader benchmarks, kept under this name. A thin entry: the benchmark lives in a checkout's
`infra/bench/loader.py` (benchmarks are not library code; nothing here imports them)."""

__all__: list[str] = []

if __name__ == "__main__":
    import runpy

    runpy.run_module("infra.bench.loader", run_name="__main__", alter_sys=True)
