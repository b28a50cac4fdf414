# Trainer image: PyTorch (CUDA 12) + NVIDIA DALI + the project, for `torchrun` jobs that read shards from S3.
#
#   docker build -f infra/docker/trainer.Dockerfile -t REGISTRY/shardkit-trainer:TAG .
#   docker run --gpus all --rm REGISTRY/shardkit-trainer:TAG python -m loaders.stream imagenet s3://BUCKET/imagenet/train
#
# CUDA 12 drivers: DALI's cuda120 build. On hosts with CUDA 13 drivers use a CUDA 13 PyTorch base and
# nvidia-dali-cuda130 (the project's `dali` extra).
ARG PYTORCH_IMAGE=pytorch/pytorch:2.7.1-cuda12.6-cudnn9-runtime
FROM ${PYTORCH_IMAGE}
WORKDIR /opt/shardkit
COPY pyproject.toml README.md ./
COPY shards ./shards
COPY loaders ./loaders
COPY infra/__init__.py infra/train_example.py ./infra/
RUN pip install --no-cache-dir "nvidia-dali-cuda120>=1.40" ".[gcs]" \
 && python -c "import loaders, nvidia.dali, torch; print(torch.__version__)"
ENV PYTHONUNBUFFERED=1
CMD ["python", "-m", "loaders.stream", "--help"]
