"""The jobs on a Dask cluster on loopback (a scheduler and 2 worker processes, `infra/dask_local.py`) through the
project's Dask runner (`pipelines/common/daskrunner.py`): every conformance case byte-identical to the default
runner, the runner's fixes each against a pipeline Beam's own Dask runner gets wrong, and both workers used."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shards.verify import verify_split
from tests.conversions import CASES

pytest.importorskip("distributed", reason="Dask is not installed (pip install '.[dask]')")
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def dask_cluster():
    from infra.dask_local import local_dask_cluster

    with local_dask_cluster(workers=2) as cluster:
        yield cluster


def _tree(root: Path) -> dict[str, bytes]:
    """Every file's bytes; a resume record without its fingerprint (a hash of the inputs' pointers, which name
    COCO's scratch under the output folder: it differs between two output folders on any runner)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            if p.parent.name == "_progress":
                data = json.dumps({k: v for k, v in json.loads(data).items() if k != "fingerprint"}).encode()
            out[str(p.relative_to(root))] = data
    return out


@pytest.mark.parametrize("dataset, layout", CASES)
def test_every_job_writes_on_dask_what_it_writes_on_the_default_runner(dataset, layout, conversions, dask_cluster):
    default, out = conversions.get(dataset, layout)
    dask, dask_out = conversions.get(dataset, layout, "dask", tuple(dask_cluster.args))
    assert default.returncode == 0 and dask.returncode == 0, dask.stderr[-3000:]
    assert dask.stdout.replace(str(dask_out), str(out)) == default.stdout  # the summary lines, counters included
    assert _tree(dask_out) == _tree(out)
    for split in (p for p in dask_out.iterdir() if (p / "manifest.json").exists()):
        assert verify_split(str(split)).ok


PROBE = r"""
import json, os, sys
import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue


class Emit(beam.DoFn):
    def start_bundle(self):
        self.seen = []

    def process(self, x):
        Metrics.counter("probe", "seen").inc()
        self.seen.append(x)
        if x % 3 == 0:
            yield beam.pvalue.TaggedOutput("threes", x)

    def finish_bundle(self):
        for x in self.seen:
            yield WindowedValue(x * 10, 0, [GlobalWindow()])


def keep(name):
    def write(xs):
        with open(os.path.join(OUT, name), "w") as f:
            json.dump(sorted(xs), f)
    return write


OUT = sys.argv[1]
p = beam.Pipeline(argv=sys.argv[2:])
nums = p | beam.Create(list(range(1000)))
emitted = nums | beam.ParDo(Emit()).with_outputs("threes", main="main")
total = nums | "Sum" >> beam.CombineGlobally(sum)
_ = emitted.main | "M" >> beam.combiners.ToList() | "WM" >> beam.Map(keep("finish_bundle"))
_ = emitted.threes | "T" >> beam.combiners.ToList() | "WT" >> beam.Map(keep("tagged"))
_ = (nums | "Shift" >> beam.Map(lambda x, t: x + t, beam.pvalue.AsSingleton(total)) | "S" >> beam.combiners.ToList()
     | "WS" >> beam.Map(keep("side_input")))
_ = p | beam.Impulse() | "I" >> beam.Map(lambda _: [1]) | "WI" >> beam.Map(keep("impulse"))
_ = nums | "First branch" >> beam.combiners.Count.Globally() | "WB" >> beam.Map(lambda n: keep("branch")([n]))
result = p.run()
result.wait_until_finish()
counters = {c.key.metric.name: c.committed for c in result.metrics().query()["counters"]}
print(json.dumps(counters))
"""


def test_the_runners_fixes_each_on_what_beams_dask_runner_gets_wrong(dask_cluster, tmp_path):
    """Every branch runs (two leaves, not only the last), finish_bundle outputs kept, tagged outputs to their own
    consumers, a singleton side input computed once and right, Impulse, metrics summed."""
    r = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path), *dask_cluster.args], capture_output=True,
                       text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    got = {name: json.loads((tmp_path / name).read_text()) for name in os.listdir(tmp_path)}
    assert got["finish_bundle"] == [x * 10 for x in range(1000)]
    assert got["tagged"] == list(range(0, 1000, 3))
    assert got["side_input"] == [x + 499500 for x in range(1000)]
    assert got["impulse"] == [1] and got["branch"] == [1000]
    assert json.loads(r.stdout.strip().splitlines()[-1]) == {"seen": 1000}


def test_both_workers_run_tasks_of_a_job(dask_cluster, tmp_path):
    from distributed import Client, get_task_stream

    from tests.raw import imagenet

    raw = imagenet.write_folders(tmp_path / "raw")
    with Client(dask_cluster.scheduler) as client, get_task_stream(client) as stream:
        r = subprocess.run([sys.executable, "-m", "pipelines", "imagenet", "--input", str(raw), "--output",
                            str(tmp_path / "out"), "--max-bad-fraction", "0.5", "--no-progress", "--",
                            *dask_cluster.args],
                           capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    workers = {t["worker"] for t in stream.data}
    assert len(workers) == 2, workers


def _job(raw: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pipelines", "imagenet", "--input", str(raw), "--output", str(out), "--no-progress",
            *extra]  # fmt: skip


def test_a_job_over_max_bad_fraction_fails_as_on_the_default_runner(dask_cluster, conversions, tmp_path):
    raw = conversions.raw("imagenet", "folders")
    beam = {"default": [], "dask": ["--", *dask_cluster.args]}
    runs = [subprocess.run(_job(raw, tmp_path / name, "--max-bad-fraction", "0", "--splits", "train", *beam[name]),
                           capture_output=True, text=True, timeout=300) for name in beam]  # fmt: skip
    assert [r.returncode for r in runs] == [1, 1]
    default, dask = (r.stderr.strip().splitlines() for r in runs)
    assert len(dask) == 1 and "more than --max-bad-fraction 0.0 allows" in dask[0], dask
    assert dask == [line.replace(str(tmp_path / "default"), str(tmp_path / "dask")) for line in default]


def test_watch_is_refused_on_dask_in_one_line(dask_cluster, conversions, tmp_path):
    r = subprocess.run(_job(conversions.raw("imagenet", "folders"), tmp_path / "out", "--watch", "--",
                            *dask_cluster.args), capture_output=True, text=True, timeout=60)  # fmt: skip
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "--watch cannot run on Dask" in lines[0], r.stderr
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """360 photo-like 500x375 JPEGs in 4 classes (and 8 in val): shards that take long enough to write, with
    --resize-max-side, for a process to be killed while one is being written."""
    from infra.photos import photo_jpeg
    from pipelines.imagenet import WNIDS

    raw = tmp_path_factory.mktemp("photos")
    for split, n, first in (("train", 360, 0), ("val", 8, 1000)):
        for i in range(n):
            folder = raw / split / WNIDS[i % 4]
            folder.mkdir(parents=True, exist_ok=True)
            name = f"{WNIDS[i % 4]}_{i}.JPEG" if split == "train" else f"ILSVRC2012_val_{i:08d}.JPEG"
            (folder / name).write_bytes(photo_jpeg(first + i, size=(500, 375)))
    return raw


SLOW = ("--min-shards", "6", "--resize-max-side", "200", "--max-bad-fraction", "0")


def _kill_while_writing(
    cmd: list[str], train: Path, pick, *, committed: int = 0
) -> tuple[subprocess.CompletedProcess, str]:
    """Run the job; when a shard of train/ is being written (and `committed` shards are), SIGKILL the process
    group `pick(writer pid)` names."""
    import re
    import signal
    import time

    from shards.storage import TEMPORARY_NAME

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = ""
    while proc.poll() is None and not killed:
        names = os.listdir(train) if train.is_dir() else []
        if sum(re.fullmatch(r"shard-\d{6}\.tar", n) is not None for n in names) < committed:
            names = []
        for name in names:
            m = re.match(TEMPORARY_NAME, name)
            group = pick(int(m["pid"])) if m and m["pid"] and name.startswith(".shard-") else None
            if group is not None:
                os.killpg(group, signal.SIGKILL)
                killed = name
                break
        time.sleep(0.01)
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err), killed


def _group(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def test_a_worker_killed_while_writing_a_shard_the_job_completes_byte_identical(photos, tmp_path):
    from infra.dask_local import local_dask_cluster

    default = subprocess.run(_job(photos, tmp_path / "default", *SLOW), capture_output=True, text=True, timeout=300)
    assert default.returncode == 0, default.stderr
    with local_dask_cluster(workers=2) as cluster:
        r, killed = _kill_while_writing(
            _job(photos, tmp_path / "dask", *SLOW, "--", *cluster.args),
            tmp_path / "dask" / "train",
            lambda pid: _group(pid) if _group(pid) in cluster.workers else None,
        )
    assert killed, "no shard was seen being written"
    assert r.returncode == 0, r.stderr[-3000:]
    assert _tree(tmp_path / "dask") == _tree(tmp_path / "default")  # the killed writer's temporary is gone too
    assert verify_split(str(tmp_path / "dask" / "train")).ok


def test_the_scheduler_killed_the_job_fails_in_one_line_and_a_re_run_keeps_committed_shards(photos, tmp_path):
    import time

    from infra.dask_local import local_dask_cluster

    with local_dask_cluster(workers=2) as cluster:
        start = time.monotonic()
        r, killed = _kill_while_writing(
            _job(photos, tmp_path / "out", *SLOW, "--", *cluster.args),
            tmp_path / "out" / "train",
            lambda pid: cluster.scheduler_pid,
            committed=1,
        )
        took = time.monotonic() - start
    lines = r.stderr.strip().splitlines()
    assert killed and r.returncode == 1 and len(lines) == 1, r.stderr[-3000:]
    assert lines[0] == (
        f"error: the imagenet job failed: lost the Dask scheduler at {cluster.scheduler}, so the job's tasks are "
        "gone: start it again and re-run the job (the shards it committed are kept)"
    )
    assert took < 120
    with local_dask_cluster(workers=2) as cluster:
        again = subprocess.run(_job(photos, tmp_path / "out", *SLOW, "--", *cluster.args), capture_output=True,
                               text=True, timeout=300)  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert verify_split(str(tmp_path / "out" / "train")).ok
    kept = int(again.stdout.split("written, ")[1].split(" kept")[0])
    assert kept >= 1, again.stdout  # what was committed before the scheduler went is not written again


def test_convert_over_a_table_of_rows_on_dask_writes_what_the_default_runner_writes(dask_cluster, tmp_path):
    from pipelines import convert
    from tests.raw import custom

    custom.write_rows(tmp_path / "rows.parquet", 61, bad=(12,))
    for name, runner in (("default", ()), ("dask", tuple(dask_cluster.args))):
        done = convert(str(tmp_path / "rows.parquet"), custom.table_row, str(tmp_path / name), max_bad_fraction=0.1,
                       min_shards=2, runner_args=runner)  # fmt: skip
        assert (done.samples, done.quarantined) == (60, 1)
    assert _tree(tmp_path / "dask") == _tree(tmp_path / "default")
