"""The GPU device check: staging DALI for the GPU machine, the splits it reads, and the run that measures it."""

__all__: list[str] = []
