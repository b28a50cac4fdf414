"""`python -m shards.bench pack|view`: the pack benchmark against tar and the `shards view` page benchmark, kept under this name. A thin entry: the benchmark lives in a checkout's
`infra/bench/pack.py` (benchmarks are not library code; nothing here imports them)."""

__all__: list[str] = []

if __name__ == "__main__":
    import runpy

    runpy.run_module("infra.bench.pack", run_name="__main__", alter_sys=True)
