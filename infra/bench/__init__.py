"""The benchmarks: each compares the project against a baseline or a peer in the same run (README, Benchmarks).
Run under their commands' names (`python -m loaders.bench`, `python -m pipelines.bench`, ...): the library keeps
those names as thin entries that forward here; nothing in the library imports this package."""

__all__: list[str] = []
