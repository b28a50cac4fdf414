"""Code shared by the dataset jobs: options, pointer records, image fixes, the sharding transform, progress."""

__all__: list[str] = []
