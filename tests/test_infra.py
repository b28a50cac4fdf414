"""What of infra/ cannot run here (Docker, Dataflow, Kubernetes) is checked as far as it can be: runner presets
are accepted by Beam's PipelineOptions, manifests parse into the objects they claim, Dockerfiles copy files that
exist, and the training example compiles."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from pipelines.common.options import expand_option_files, is_local_runner, read_option_file, split_argv

ROOT = Path(__file__).parents[1]
INFRA = ROOT / "infra"
PRESETS = sorted((INFRA / "runners").glob("*.args"))
NEEDED = {"GCP_PROJECT": "my-project", "GCS_TEMP": "gs://b/tmp", "WORKER_IMAGE": "r/shardkit-worker:1"}


def test_every_runner_preset_is_accepted_by_pipeline_options(monkeypatch):
    from apache_beam.options.pipeline_options import PipelineOptions

    for k, v in NEEDED.items():
        monkeypatch.setenv(k, v)
    assert {p.stem for p in PRESETS} == {"local", "portable", "flink", "dataflow", "flink-streaming",
                                         "dataflow-streaming", "dask"}  # fmt: skip
    import apache_beam.runners.dask.dask_runner  # noqa: F401 (registers --dask_*, stored as `address`, ...)

    renamed = {"dask_client_address": "address"}
    for preset in PRESETS:
        args = read_option_file(str(preset))
        assert args and all(a.startswith("--") and "${" not in a for a in args), preset
        known = PipelineOptions(args).get_all_options(retain_unknown_options=False)
        for a in args:  # every option is one Beam knows, with the value written (a flag: set)
            name, value = a[2:].split("=", 1) if "=" in a else (a[2:], "True")
            name = renamed.get(name, name)
            assert name in known, f"{preset.name}: Beam does not know --{name}"
            assert str(known[name]) == value or known[name] == [value], f"{preset.name}: --{name}"
    assert read_option_file(str(INFRA / "runners" / "dataflow.args"))[1] == "--project=my-project"


def test_presets_expand_after_the_double_dash_and_pick_the_writer_parallelism(monkeypatch):
    monkeypatch.delenv("BEAM_JOB_ENDPOINT", raising=False)
    ours, beam = split_argv(["--input", "x", "--", "@infra/runners/portable.args", "--direct_num_workers=2"])
    assert ours == ["--input", "x"]
    assert beam[0] == "--runner=PortableRunner" and "--job_endpoint=localhost:8099" in beam
    assert beam[-1] == "--direct_num_workers=2"
    monkeypatch.setenv("BEAM_JOB_ENDPOINT", "flink-js:8099")
    assert "--job_endpoint=flink-js:8099" in expand_option_files(["@infra/runners/portable.args"])
    assert is_local_runner(expand_option_files(["@infra/runners/local.args"]))
    assert is_local_runner([])
    assert not is_local_runner(beam)
    assert not is_local_runner(["--runner=DirectRunner", "--direct_running_mode=multi_processing"])


def test_a_preset_missing_a_variable_names_it(monkeypatch):
    monkeypatch.delenv("GCP_PROJECT", raising=False)
    with pytest.raises(SystemExit, match=r"dataflow.args:\d+: set \$GCP_PROJECT"):
        read_option_file(str(INFRA / "runners" / "dataflow.args"))


def test_kubernetes_manifests_parse_into_the_objects_they_describe():
    flink = list(yaml.safe_load_all((INFRA / "k8s" / "flink-beam.yaml").read_text()))
    kinds = {d["kind"]: d for d in flink}
    assert set(kinds) == {"FlinkDeployment", "Deployment", "Service"}
    sidecar = kinds["FlinkDeployment"]["spec"]["taskManager"]["podTemplate"]["spec"]["containers"][0]
    assert sidecar["args"] == ["--worker_pool"] and sidecar["ports"][0]["containerPort"] == 50000
    server = kinds["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert any(a.startswith("--flink-master=") for a in server["args"])
    # the flink preset reaches what the manifest serves: the job server's port and the sidecar's
    flink_args = read_option_file(str(INFRA / "runners" / "flink.args"))
    assert "--environment_config=localhost:50000" in flink_args
    assert any(a.endswith(":8099") and "beam-job-server" in a for a in flink_args)
    assert {p["port"] for p in kinds["Service"]["spec"]["ports"]} >= {8099, 8098}

    train = {d["kind"]: d for d in yaml.safe_load_all((INFRA / "k8s" / "train-job.yaml").read_text())}
    job = train["Job"]["spec"]
    assert job["completionMode"] == "Indexed" and job["completions"] == job["parallelism"]
    container = job["template"]["spec"]["containers"][0]
    cmd = " ".join(container["args"])
    assert "torchrun" in cmd and f"--nnodes={job['completions']}" in cmd and "infra/train_example.py" in cmd
    assert container["resources"]["limits"]["nvidia.com/gpu"] == int(re.search(r"--nproc-per-node=(\d+)", cmd)[1])
    assert train["Service"]["spec"]["clusterIP"] == "None"  # pods get stable names for the rendezvous


@pytest.mark.parametrize("dockerfile", sorted((INFRA / "docker").glob("*.Dockerfile")), ids=lambda p: p.stem)
def test_dockerfiles_start_from_an_image_and_copy_files_that_exist(dockerfile):
    lines = [ln.strip() for ln in dockerfile.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    instructions = [ln.split()[0] for ln in lines]
    assert instructions[instructions.index("FROM") - 1 :: -1] == ["ARG"] * instructions.index("FROM")
    for ln in lines:
        if ln.startswith("COPY"):
            for src in ln.split()[1:-1]:
                assert (ROOT / src).exists(), f"{dockerfile.name}: COPY {src}: no such file in the repository"


def test_worker_image_pins_beam_to_its_base_image():
    text = (INFRA / "docker" / "worker.Dockerfile").read_text()
    assert "FROM apache/beam_python${PYTHON_VERSION}_sdk:${BEAM_VERSION}" in text
    assert '"apache-beam[tfrecord,gcp]==${BEAM_VERSION}"' in text


def test_training_example_compiles_and_uses_the_loader():
    tree = ast.parse((INFRA / "train_example.py").read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert "imagenet_dali" in imported


def test_local_s3_says_what_a_bucket_name_must_be():
    import subprocess
    import sys

    for bad in ("b", "UPPER", "a" * 64, "x_y"):
        r = subprocess.run([sys.executable, "-m", "infra.local_s3", "--bucket", bad], capture_output=True, text=True)
        assert r.returncode == 2 and "3-63 characters" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_the_s3_endpoint_dies_with_a_parent_that_was_killed(tmp_path):
    """A SIGKILL (or an abort) skips every `finally`: the endpoint still goes, with its parent."""
    import signal
    import subprocess
    import sys
    import time

    from shards.procs import alive, descendants

    code = "from infra.local_s3 import local_s3\nwith local_s3() as env:\n    print(env['AWS_ENDPOINT_URL'], flush=True)\n    import time; time.sleep(600)\n"
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout.readline().startswith("http://127.0.0.1:")
        children = descendants(parent.pid)
        assert children
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    deadline = time.monotonic() + 10
    while any(alive(c) for c in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(c) for c in children)
