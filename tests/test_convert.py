"""`pipelines.convert` and `python -m pipelines custom`: a user's function over a folder, over rows, into tar and
Arrow splits; its failures quarantined naming the input; re-runs byte-identical; the portable runner; clear
errors before the pipeline starts; the generic loader over the result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipelines import ConvertError, convert
from pipelines.conversion import JobFailed
from shards.manifest import read_manifest
from shards.verify import verify_split
from tests.raw import custom
from tests.splits import read_samples

pytest.importorskip("apache_beam")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return custom.write_folder(tmp_path_factory.mktemp("mine") / "photos")


@pytest.fixture(scope="module")
def converted(folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    done = convert(f"{folder}/*/*", custom.to_sample, str(out), classes=custom.CLASSES, max_bad_fraction=0.1,
                   min_shards=2)  # fmt: skip
    return out, done


def test_a_folder_becomes_a_verified_shuffled_split(folder, converted):
    out, done = converted
    assert (done.samples, done.quarantined, done.shards) == (36, 1, 2)
    m = read_manifest(str(out / "train"))
    assert m["classes"] == custom.CLASSES and set(m["fields"]) == {"jpg", "cls"}
    assert m["params"]["fn"] == "tests.raw.custom:to_sample"
    q = [json.loads(x) for x in (out / "train" / "quarantine.jsonl").read_text().splitlines()]
    assert q[0]["source"].endswith("dogs/notes.txt") and "raised ValueError: not a JPEG: notes.txt" in q[0]["reason"]
    samples = read_samples(out / "train")
    files = sorted(folder.glob("*/*.jpg"))
    assert sorted(s["jpg"] for s in samples.values()) == sorted(f.read_bytes() for f in files)
    for s in samples.values():
        f = next(f for f in files if f.read_bytes() == s["jpg"])
        assert int(s["cls"]) == custom.CLASSES.index(f.parent.name)
    order = [int(k[2:]) for k in samples]  # keys in[index] of the sorted inputs, in the shards' order
    assert order != sorted(order)  # shuffled
    assert verify_split(str(out / "train")).ok


def test_reruns_are_byte_identical_and_keep_shards(folder, converted, tmp_path):
    out, _ = converted
    again = convert(f"{folder}/*/*", custom.to_sample, str(tmp_path), classes=custom.CLASSES,
                    max_bad_fraction=0.1, min_shards=2)  # fmt: skip
    assert read_manifest(str(tmp_path / "train")) == read_manifest(str(out / "train"))
    for name in ("shard-000000.tar", "shard-000001.idx", "quarantine.jsonl"):
        assert (tmp_path / "train" / name).read_bytes() == (out / "train" / name).read_bytes()
    assert again.samples == 36
    shards = sorted((out / "train").glob("shard-*"))
    before = {p.name: p.stat().st_mtime_ns for p in shards}
    convert(f"{folder}/*/*", custom.to_sample, str(out), classes=custom.CLASSES, max_bad_fraction=0.1, min_shards=2)
    assert {p.name: p.stat().st_mtime_ns for p in shards} == before  # the same inputs and function: shards kept


def test_rows_with_failures_are_quarantined_naming_the_input(tmp_path):
    rows = [(f"r{i:02d}", list(range(i))) for i in range(20)]
    rows += [("bad-raise", []), ("bad-none", []), ("bad-fields", []), ("bad-key", []), ("bad-type", [])]
    done = convert(rows, custom.row_sample, str(tmp_path), max_bad_fraction=0.5)
    assert (done.samples, done.quarantined) == (20, 5)
    reasons = {q["source"]: q["reason"] for q in map(json.loads, (tmp_path / "train" / "quarantine.jsonl").open())}
    assert reasons["input #20: ('bad-raise', [])"] == "the function raised KeyError: 'no such record'"
    assert reasons["input #21: ('bad-none', [])"] == "the function returned None, not a sample"
    assert "has fields ['extra', 'npy']; the split's are ['json', 'npy']" in reasons["input #22: ('bad-fields', [])"]
    assert "contains ' '" in reasons["input #23: ('bad-key', [])"]
    assert reasons["input #24: ('bad-type', [])"].startswith("field 'npy' (ndarray) cannot be encoded: ")
    got = read_samples(tmp_path / "train")
    assert np.array_equal(np.load(__import__("io").BytesIO(got["r07"]["npy"])), np.arange(7, dtype=np.float32))
    assert json.loads(got["r07"]["json"]) == {"n": 7, "name": "r07"}
    assert verify_split(str(tmp_path / "train")).ok


def test_several_samples_per_input_and_none_are_accounted_for(tmp_path):
    done = convert(range(30), custom.expand, str(tmp_path))
    assert done.samples == 30 and done.quarantined == 10  # 10 x 0 (filtered), 10 x 1, 10 x 2 samples
    m = read_manifest(str(tmp_path / "train"))
    assert m["source"]["inputs"] == 30 and m["source"]["inputs_seen"] == done.samples + done.quarantined
    assert verify_split(str(tmp_path / "train")).ok


def test_a_key_given_twice_is_quarantined_in_a_shard_and_fails_the_job_across_shards(tmp_path):
    rows = [(f"r{i}", [1]) for i in range(40)] + [("dup-a", []), ("dup-b", [])]
    try:  # the two land in one shard (quarantined) or in two (the job fails, naming both inputs)
        done = convert(rows, custom.row_sample, str(tmp_path / "a"), min_shards=2, max_bad_fraction=0.1)
        assert done.quarantined == 1
        (q,) = map(json.loads, (tmp_path / "a" / "train" / "quarantine.jsonl").open())
        assert "duplicate key: another sample of this split is also named dup" in q["reason"]
    except JobFailed as e:
        assert "sample key 'dup' was given by two inputs" in str(e) and "dup-a" in str(e) and "dup-b" in str(e)
        assert not (tmp_path / "a" / "train" / "manifest.json").exists()


def test_arrow_rows_with_an_inferred_schema(tmp_path):
    done = convert(range(24), custom.arrow_row, str(tmp_path), format="arrow")
    m = read_manifest(str(tmp_path / "train"))
    assert m["fields"] == {"id": "string", "x": "double", "tokens": "list<item: int64>"}
    import pyarrow as pa

    rows = [
        r for e in m["shards"] for r in pa.ipc.open_file(str(tmp_path / "train" / e["path"])).read_all().to_pylist()
    ]
    assert done.samples == 24 and sorted(rows, key=lambda r: r["id"]) == [custom.arrow_row(n) for n in range(24)]


def _split_files(split: Path) -> dict[str, bytes]:
    """A split's files, but the manifest's record of how the inputs were given (source, the shard estimate)."""
    out = {p.name: p.read_bytes() for p in split.iterdir() if p.is_file() and p.name != "manifest.json"}
    m = json.loads((split / "manifest.json").read_text())
    m["source"].pop("url")
    m["params"].pop("min_shards")
    return {**out, "manifest": json.dumps(m, sort_keys=True).encode()}


def test_a_glob_listed_on_the_workers_gives_the_split_of_the_glob_listed_here(folder, converted, tmp_path):
    """`*/*` has a folder level: the class folders are listed here, their files on the workers (counted,
    then numbered as the whole glob sorts) - the same keys, so the same shards as the list given whole."""
    from pipelines.common.workerinputs import split_glob
    from pipelines.conversion import list_inputs

    pattern = f"{folder}/*/*"
    assert split_glob(pattern).folders() == [str(folder / c) for c in custom.CLASSES]
    out, _ = converted  # made from the pattern
    listed = convert(list_inputs(pattern), custom.to_sample, str(tmp_path), classes=custom.CLASSES,
                     max_bad_fraction=0.1, min_shards=2)  # fmt: skip
    assert listed.shards == 2
    assert _split_files(out / "train") == _split_files(tmp_path / "train")


def test_a_glob_on_s3_is_listed_on_the_workers_folder_by_folder(s3_endpoint, folder, tmp_path):
    from pipelines.common.workerinputs import split_glob
    from shards import storage

    for path in sorted(folder.glob("*/*.jpg"))[::3]:  # 4 of each class
        storage.write_bytes(f"s3://test/globbed/{path.parent.name}/{path.name}", path.read_bytes())
    pattern = "s3://test/globbed/*/*.jpg"
    assert split_glob(pattern).folders() == [f"s3://test/globbed/{c}" for c in custom.CLASSES]
    # in a fresh process, as a user runs it: a writer pool an earlier test started in this one predates the
    # endpoint's variables (and storage_options given here would stay configured for the tests after this one)
    script = ("import json, sys\nfrom pipelines import convert\nfrom pipelines.conversion import list_inputs\n"
              "from tests.raw.custom import url_sample\np = 's3://test/globbed/*/*.jpg'\n"
              "a = convert(p, url_sample, 's3://test/globbed-out', min_shards=1)\n"
              "b = convert(list_inputs(p), url_sample, sys.argv[1], min_shards=1)\n"
              "print(json.dumps([a.samples, b.samples]))")  # fmt: skip
    r = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout.strip().splitlines()[-1]) == [12, 12]
    for name in ("shard-000000.tar", "shard-000000.idx"):
        assert storage.read_bytes(f"s3://test/globbed-out/train/{name}") == (tmp_path / "train" / name).read_bytes()


@pytest.mark.parametrize("kind", ["parquet", "arrow"])
def test_the_rows_of_a_table_file_are_read_on_the_workers_as_the_same_rows_given_as_a_list(tmp_path, kind):
    """A Parquet file (pandas, row groups of 7) or an Arrow IPC file (record batches of 7): each row one input,
    read by the workers part by part; the split is the one the same rows given as a list make, and a failing row
    is quarantined naming the file and the row."""
    path = tmp_path / f"records.{kind}"
    rows = custom.write_rows(path, 61, kind=kind, bad=(12,))
    done = convert(str(path), custom.table_row, str(tmp_path / "file"), max_bad_fraction=0.1, min_shards=2)
    assert (done.samples, done.quarantined) == (60, 1)
    (q,) = map(json.loads, (tmp_path / "file" / "train" / "quarantine.jsonl").open())
    assert q["source"] == f"{path} row 12" and q["reason"] == "the function raised ValueError: n is -1"
    convert(rows, custom.table_row, str(tmp_path / "list"), max_bad_fraction=0.1, min_shards=2)
    file_split, list_split = (_split_files(tmp_path / x / "train") for x in ("file", "list"))
    assert {k: v for k, v in file_split.items() if k != "quarantine.jsonl"} == {
        k: v for k, v in list_split.items() if k != "quarantine.jsonl"
    }
    got = read_samples(tmp_path / "file" / "train")
    assert json.loads(got["rec000033"]["json"]) == {"name": "rec000033", "n": 33} and got["rec000033"]["cls"] == b"3"
    assert verify_split(str(tmp_path / "file" / "train")).ok


def test_custom_command_takes_a_table_of_rows_as_its_input(tmp_path):
    custom.write_rows(tmp_path / "rows.parquet", 30)
    r = subprocess.run([sys.executable, "-m", "pipelines", "custom", "--input", str(tmp_path / "rows.parquet"),
                        "--output", str(tmp_path / "out"), "--module", "tests.raw.custom:table_row", "--no-progress"],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert read_manifest(str(tmp_path / "out" / "train"))["num_samples"] == 30


def test_a_table_file_that_is_not_one_is_a_clear_error(tmp_path):
    (tmp_path / "rows.parquet").write_text("name,n\nrec0,1\n")  # a CSV with the wrong name
    with pytest.raises(ConvertError, match=r"^inputs '.*rows\.parquet' is not a readable table of rows: .*$"):
        convert(str(tmp_path / "rows.parquet"), custom.table_row, str(tmp_path / "out"))
    with pytest.raises(ConvertError, match=r"^inputs '.*missing\.arrow': no such file$"):
        convert(str(tmp_path / "missing.arrow"), custom.table_row, str(tmp_path / "out"))
    custom.write_rows(tmp_path / "empty.parquet", 0)
    with pytest.raises(ConvertError, match="no inputs"):
        convert(str(tmp_path / "empty.parquet"), custom.table_row, str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_bad_arguments_are_clear_errors_before_the_pipeline(tmp_path):
    with pytest.raises(ConvertError, match=r"fn must be picklable .*not a lambda"):
        convert(range(3), lambda i: {"txt": str(i)}, str(tmp_path))
    with pytest.raises(ConvertError, match=r"input #1 .* must be picklable"):
        convert([1, (x for x in ()), 3], custom.expand, str(tmp_path))
    with pytest.raises(ConvertError, match="no inputs match"):
        convert(f"{tmp_path}/nothing/*.jpg", custom.to_sample, str(tmp_path))
    with pytest.raises(ConvertError, match="made no sample from the first 3 inputs; first failure: input #0"):
        convert(["a.png", "b.png", "c.png"], custom.to_sample, str(tmp_path))
    assert not list(tmp_path.iterdir())


def test_custom_command_and_its_usage_errors(folder, converted, tmp_path):
    cmd = [sys.executable, "-m", "pipelines", "custom", "--input", str(folder), "--output", str(tmp_path),
           "--module", "tests.raw.custom:to_sample", "--min-shards", "2", "--max-bad-fraction", "0.1", "--no-progress"]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "train: 36 samples in 2 shards, 1 quarantined" in r.stdout, r.stderr[-2000:]
    bad = [*cmd[:9], "tests.raw.custom:nothing"]
    r = subprocess.run(bad, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "--module 'tests.raw.custom:nothing': tests.raw.custom has no nothing" in r.stderr
    (tmp_path / "classes.txt").write_text("".join(f"{c}\n" for c in custom.CLASSES))
    mine = [*cmd[:9], "tests.raw.custom:to_sample", "--classes", str(tmp_path / "classes.txt"), "--max-bad-fraction",
            "0.1", "--no-progress", "--output", str(tmp_path / "b")]  # fmt: skip
    r = subprocess.run(mine, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "train: 36 samples in 1 shard, 1 quarantined" in r.stdout, r.stderr[-2000:]
    assert read_manifest(str(tmp_path / "b" / "train"))["classes"] == list(custom.CLASSES)


def test_custom_command_makes_the_store_checks_every_job_makes(folder, tmp_path):
    """`custom` goes through the job runner's store checks: an output inside the input (a glob's folder) would
    be read back as input on the next run, and a glob under a folder that is not there reads nothing."""
    cmd = [sys.executable, "-m", "pipelines", "custom", "--module", "tests.raw.custom:to_sample", "--no-progress"]
    inside = subprocess.run([*cmd, "--input", f"{folder}/*/*", "--output", str(folder / "out")], capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert inside.returncode == 2 and "would be written into the raw dataset" in inside.stderr, inside.stderr
    assert not (folder / "out").exists()
    gone = subprocess.run([*cmd, "--input", f"{tmp_path}/absent/*.jpg", "--output", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert gone.returncode == 2 and f"cannot read --input {tmp_path}/absent" in gone.stderr, gone.stderr
    assert len(gone.stderr.strip().splitlines()) == 1


def test_generic_loader_reads_the_split_with_a_ready_graph_and_raw_tensors(converted, tmp_path):
    pytest.importorskip("nvidia.dali")
    from loaders import generic_dali, image_classification, raw_tensors

    out, _ = converted
    loader = generic_dali(str(out / "train"), batch_size=6, graph=image_classification(image_size=32, train=False),
                          device="cpu", return_keys=True)  # fmt: skip
    samples = read_samples(out / "train")
    n = 0
    for batch in loader:
        assert batch["image"].shape == (6, 3, 32, 32)
        assert batch["label"].tolist() == [int(samples[k]["cls"]) for k in batch["key"]]
        n += 6
    assert n == 36
    rows = [(f"r{i:02d}", [i, i + 1, i + 2]) for i in range(32)]
    convert(rows, custom.row_sample, str(tmp_path), fields=["npy", "json"])
    tensors = generic_dali(str(tmp_path / "train"), batch_size=8, graph=raw_tensors(), device="cpu", return_keys=True)
    for batch in tensors:
        for key, row in zip(batch["key"], batch["npy"].numpy(), strict=True):
            assert row.tolist() == [int(key[1:]), int(key[1:]) + 1, int(key[1:]) + 2]
    columns = {"x": "double", "v": "fixed_size_list<item: int64>[3]"}  # Arrow columns: tensors as they are
    convert(range(16), custom.arrow_fixed, str(tmp_path / "arrow"), format="arrow", fields=columns)
    for batch in generic_dali(str(tmp_path / "arrow" / "train"), batch_size=8, graph=raw_tensors(), device="cpu",
                              return_keys=True):  # fmt: skip
        n = [int(k[1:]) for k in batch["key"]]
        assert batch["x"].tolist() == [i / 4 for i in n] and batch["v"].tolist() == [[i, i + 1, i + 2] for i in n]


@pytest.mark.integration
def test_the_portable_runner_gives_the_local_runners_bytes(folder, converted, tmp_path, monkeypatch):
    import tempfile

    from infra.beam_local import local_beam_cluster

    out, _ = converted
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # the runner's staging folder (it leaves it)
    with local_beam_cluster(workers=2) as cluster:
        done = convert(f"{folder}/*/*", custom.to_sample, str(tmp_path), classes=custom.CLASSES,
                       max_bad_fraction=0.1, min_shards=2, runner_args=cluster.args)  # fmt: skip
    assert done.samples == 36
    for name in sorted(p.name for p in (out / "train").iterdir() if p.is_file()):
        assert (tmp_path / "train" / name).read_bytes() == (out / "train" / name).read_bytes(), name


def test_a_function_of_the_users_script_works_as_the_readme_shows(folder, tmp_path):
    """fn defined in the script run as __main__ (the README's example): it travels by value to the writers."""
    script = tmp_path / "mine.py"
    script.write_text(
        "import os\nfrom pipelines import convert\nCLASSES = ['cats', 'dogs', 'owls']\n\n"
        "def to_sample(path):\n    with open(path, 'rb') as f:\n"
        "        return {'jpg': f.read(), 'cls': CLASSES.index(os.path.basename(os.path.dirname(path)))}\n\n"
        "if __name__ == '__main__':\n"
        f"    print(convert({str(folder)!r} + '/*/*.jpg', to_sample, {str(tmp_path / 'out')!r}, classes=CLASSES))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1]), TMPDIR=str(tmp_path))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0 and "samples=36" in r.stdout, r.stderr[-2000:]
    assert read_manifest(str(tmp_path / "out" / "train"))["params"]["fn"] == "__main__:to_sample"


def test_every_way_a_sample_can_break_the_writer_is_quarantined_naming_the_input(tmp_path):
    """One shard, so a duplicate key meets its twin in the writer; a key too long for a tar name, a generator that
    raises part-way, NaN and infinity in a field: each is this input's quarantine entry, and the job completes."""
    rows = [(f"r{i:02d}", [1.0, 2.0]) for i in range(20)]
    rows += [(n, []) for n in ("dup-a", "dup-b", "bad-long-key", "bad-nan-array", "bad-inf-json", "bad-generator")]
    done = convert(rows, custom.row_sample, str(tmp_path), min_shards=1, max_bad_fraction=0.5)
    q = list(map(json.loads, (tmp_path / "train" / "quarantine.jsonl").open()))
    reasons = "\n".join(f"{e['source']}: {e['reason']}" for e in q)
    assert "duplicate key: another sample of this split is also named dup" in reasons
    assert "is 125 bytes, more than the 100 a tar name holds" in reasons
    assert "('bad-nan-array', []): field 'npy' holds a NaN or an infinity" in reasons
    assert "('bad-inf-json', []): field 'json' holds a NaN or an infinity" in reasons
    assert "('bad-generator', []): the function raised OSError while yielding samples: the source went away" in reasons
    assert (done.samples, done.quarantined) == (21, 5) and verify_split(str(tmp_path / "train")).ok


def test_a_nan_label_is_quarantined_not_stored(tmp_path):
    done = convert(range(20), custom.nan_label, str(tmp_path), fields=("cls", "txt"), max_bad_fraction=0.5)
    assert (done.samples, done.quarantined) == (16, 4)
    assert all(s["cls"] != b"nan" for s in read_samples(tmp_path / "train").values())


def test_a_function_that_never_returns_is_quarantined_after_the_input_timeout(tmp_path):
    done = convert(range(30), custom.hangs, str(tmp_path), input_timeout=1, max_bad_fraction=0.1, writer_processes=2)
    (q,) = map(json.loads, (tmp_path / "train" / "quarantine.jsonl").open())
    assert (done.samples, done.quarantined) == (29, 1)
    assert q["source"] == "input #20: 20" and q["reason"] == "the function did not finish within 1s (input_timeout)"


def test_a_function_that_kills_its_writer_is_named_and_leaves_no_temporary(tmp_path):
    with pytest.raises(JobFailed, match=r"a writer process died while converting input #20: 20 \(key in000000020\)"):
        convert(range(30), custom.aborts, str(tmp_path), writer_processes=2, min_shards=2)
    assert not list(tmp_path.rglob("*.tmp-*")) and not (tmp_path / "train" / "manifest.json").exists()
    with pytest.raises(ConvertError, match="input_timeout must be a number of seconds > 0"):
        convert(range(3), custom.hangs, str(tmp_path), input_timeout=0)


def test_convert_shows_the_jobs_progress_line_when_asked(tmp_path, capfd, monkeypatch):
    monkeypatch.setenv("SHARDKIT_PROGRESS_SECONDS", "0.2")
    convert(range(60), custom.slow, str(tmp_path / "a"), progress=True, min_shards=2, writer_processes=2)
    assert "[custom] train: " in capfd.readouterr().err
    convert(range(20), custom.slow, str(tmp_path / "b"), progress=False)
    assert "[custom]" not in capfd.readouterr().err  # and by default only on a terminal
