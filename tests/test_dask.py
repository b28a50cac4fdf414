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
