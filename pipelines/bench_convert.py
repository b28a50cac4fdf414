"""`python -m pipelines.bench_convert [rows]`: the convert benchmark against LitData (with `rows`: the launcher's
memory over a table of rows), kept under this name. A thin entry: the benchmark lives in a checkout's
`infra/bench/job_convert.py` (benchmarks are not library code; nothing here imports them)."""

__all__: list[str] = []

if __name__ == "__main__":
    import runpy

    runpy.run_module("infra.bench.job_convert", run_name="__main__", alter_sys=True)
