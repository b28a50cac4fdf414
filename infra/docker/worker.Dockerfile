# Beam SDK worker image: the project installed on Beam's Python SDK base image, for
# `--sdk_container_image` (Dataflow) and as the worker-pool sidecar of Flink task managers (`--worker_pool`).
# The tag of the base image must match the apache-beam version the job is launched with.
#
#   docker build -f infra/docker/worker.Dockerfile --build-arg BEAM_VERSION=2.77.0 -t REGISTRY/shardkit-worker:TAG .
#   docker push REGISTRY/shardkit-worker:TAG
ARG BEAM_VERSION=2.77.0
ARG PYTHON_VERSION=3.11
FROM apache/beam_python${PYTHON_VERSION}_sdk:${BEAM_VERSION}
ARG BEAM_VERSION
WORKDIR /opt/shardkit
COPY pyproject.toml README.md ./
COPY shards ./shards
COPY pipelines ./pipelines
# apache-beam is pinned to the base image's own version so pip never replaces the SDK the boot binary expects;
# gcsfs for gs:// inputs and outputs, s3fs (a core dependency) for s3://
RUN pip install --no-cache-dir "apache-beam[tfrecord,gcp]==${BEAM_VERSION}" ".[beam,gcs]" \
 && python -c "import pipelines.imagenet, shards.storage, s3fs, gcsfs"
# the base image's entrypoint (/opt/apache/beam/boot) stays: it starts the SDK harness, or a worker pool
# with --worker_pool
