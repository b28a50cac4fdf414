"""What it takes to run beyond one laptop: the local S3 endpoint, runner presets, images, cluster manifests."""

__all__: list[str] = []
