"""Splits of many shards list them in a shard table beside manifest.json (shards/table.py): written from
`TABLE_MIN_SHARDS` shards on (lowered here so that real splits stay small), read back as the same entries, checked
against the manifest, and refused with the manifest and the table named when they do not agree."""

from __future__ import annotations

import json

import pytest

from shards import storage
from shards.errors import ManifestError
from shards.manifest import build_manifest, read_manifest, write_manifest
from shards.table import ShardTable, table_bytes

SHA = "ab" * 32


def _entries(n: int) -> list[dict]:
    return [
        {"path": f"shard-{i:06d}.tar", "idx": f"shard-{i:06d}.idx", "num_samples": 3 + i % 5, "num_bytes": 1000 + i,
         "sha256": SHA}
        for i in range(n)
    ]  # fmt: skip


def _manifest(entries: list[dict]) -> dict:
    n = sum(e["num_samples"] for e in entries)
    return build_manifest(dataset="t", split="train", fields={"jpg": "image/jpeg", "cls": "label"}, shards=entries,
                          source={"url": "test", "inputs_seen": n}, classes=["a", "b", "c"])  # fmt: skip


@pytest.fixture
def small_tables(monkeypatch):
    """Shard tables from 3 shards on."""
    monkeypatch.setattr("shards.manifest.TABLE_MIN_SHARDS", 3)


def test_a_split_of_many_shards_lists_them_in_a_table_read_back_as_the_same_entries(tmp_path, small_tables):
    entries = _entries(5)
    write_manifest(str(tmp_path), _manifest(entries))
    raw = json.loads((tmp_path / "manifest.json").read_text())
    assert "shards" not in raw and raw["shard_table"]["num_shards"] == 5
    table_file = tmp_path / raw["shard_table"]["path"]
    assert table_file.name.startswith("shards-") and table_file.name.endswith(".parquet")
    m = read_manifest(str(tmp_path))
    assert isinstance(m["shards"], ShardTable)
    assert list(m["shards"]) == entries and m["shards"][4] == entries[4] and m["shards"][-1] == entries[-1]
    assert m["shards"].column("num_samples").tolist() == [e["num_samples"] for e in entries]
    before = (tmp_path / "manifest.json").read_bytes(), table_file.read_bytes()
    write_manifest(str(tmp_path), m)  # read and written again: the same bytes, the same table
    assert ((tmp_path / "manifest.json").read_bytes(), table_file.read_bytes()) == before
    assert table_bytes(entries) == before[1]
    few = tmp_path / "few"
    write_manifest(str(few), _manifest(entries[:2]))  # below the threshold: the list stays in the JSON
    assert json.loads((few / "manifest.json").read_text())["shards"] == entries[:2]


def _tampered(tmp_path, edit) -> str:
    write_manifest(str(tmp_path), _manifest(_entries(4)))
    raw = json.loads((tmp_path / "manifest.json").read_text())
    edit(tmp_path, raw)
    (tmp_path / "manifest.json").write_text(json.dumps(raw))
    return str(tmp_path / "manifest.json")


def _swap_table(entries):
    def edit(root, raw):  # a well-formed table of other entries, under the name and sha256 the manifest gives
        data = table_bytes(entries)
        (root / raw["shard_table"]["path"]).write_bytes(data)
        import hashlib

        raw["shard_table"]["sha256"] = hashlib.sha256(data).hexdigest()

    return edit


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda root, raw: (root / raw["shard_table"]["path"]).unlink(), r"its shard table .*shards-.*\.parquet is missing"),
        (lambda root, raw: (root / raw["shard_table"]["path"]).write_bytes(b"PAR1 not a table"), r"has sha256 [0-9a-f]{64}, the manifest says"),
        (lambda root, raw: raw["shard_table"].update(num_shards=5), "has 4 shards, the manifest says 5"),
        (lambda root, raw: raw["shard_table"].update(path="../elsewhere.parquet"), "shard_table.path '../elsewhere.parquet' must be relative"),
        (_swap_table([*_entries(3), {**_entries(4)[3], "path": "../../etc/passwd"}]), r"shards\[3\]\.path '\.\./\.\./etc/passwd' must be relative"),
        (_swap_table([*_entries(3), _entries(4)[0]]), "the shard table lists a path twice"),
        (_swap_table([*_entries(3), {**_entries(4)[3], "sha256": "XY"}]), "sha256 in the table is not hex"),
        (_swap_table([*_entries(3), {**_entries(4)[3], "idx": None}]), "a tar of the shard table has no 'idx'"),
        (_swap_table([*_entries(3), {**_entries(4)[3], "num_samples": None}]), r"shards\[3\]\.num_samples has no value"),
        (_swap_table([*_entries(3), {**_entries(4)[3], "num_samples": 99}]), "shards hold .* samples but 'num_samples' says"),
    ],
)  # fmt: skip
def test_a_table_that_does_not_agree_with_its_manifest_is_refused_naming_both(tmp_path, small_tables, edit, message):
    url = _tampered(tmp_path, edit)
    with pytest.raises(ManifestError, match=message) as e:
        read_manifest(str(tmp_path))
    assert str(e.value).startswith(url) and "\n" not in str(e.value)


def test_generations_of_a_split_of_many_shards_share_tables_and_snapshots_read_back(tmp_path, small_tables):
    from shards.generations import publish_generation, read_generation

    split = str(tmp_path / "grow")
    template = _manifest(_entries(1))
    for g, n in ((1, 2), (2, 3)):  # 2 shards: a list in the JSON; then 5 in all: a table
        folder = f"inc-{g}"
        storage.write_bytes(storage.join(split, folder, "inputs.jsonl"), b"")
        entries = [{**e, "path": f"s{i}.tar", "idx": f"s{i}.idx"} for i, e in enumerate(_entries(n))]
        publish_generation(split, folder=folder, kind="increment", shards=entries, quarantine=[],
                           inputs_seen=sum(e["num_samples"] for e in entries), template=template)  # fmt: skip
    newest = read_manifest(split)
    assert isinstance(newest["shards"], ShardTable) and len(newest["shards"]) == 5
    assert newest["shards"].column("generation").tolist() == [1, 1, 2, 2, 2]
    first = read_generation(split, 1)
    assert [s["path"] for s in first["shards"]] == ["inc-1/s0.tar", "inc-1/s1.tar"]
    assert list(read_generation(split, 2)["shards"]) == list(newest["shards"])


def test_a_loader_reads_a_split_with_a_shard_table_as_it_reads_the_same_split_with_a_list(tmp_path, monkeypatch):
    """The same shards, once listed in manifest.json and once in a table: the same batches, key for key and
    pixel for pixel, and the same length (a rank looks shards up by index, without an entry per shard)."""
    pytest.importorskip("nvidia.dali", reason="DALI is not installed (pip install '.[dali]')")
    from loaders import imagenet_dali
    from tests.splits import make_split, photo_shards

    shards = photo_shards("t", [5, 7, 6, 4])
    make_split(str(tmp_path / "list"), shards)
    monkeypatch.setattr("shards.manifest.TABLE_MIN_SHARDS", 2)
    make_split(str(tmp_path / "table"), shards)
    assert "shard_table" in json.loads((tmp_path / "table" / "manifest.json").read_text())
    out = []
    for name in ("list", "table"):
        loader = imagenet_dali(str(tmp_path / name), batch_size=4, train=True, image_size=24, device="cpu",
                               return_keys=True, seed=3, num_threads=1, world_size=2, rank=1)  # fmt: skip
        out.append([(list(b["key"]), b["label"].tolist(), b["image"].numpy()) for b in loader])
    assert len(out[0]) == len(out[1]) == 2
    for (keys_a, labels_a, img_a), (keys_b, labels_b, img_b) in zip(*out, strict=True):
        assert keys_a == keys_b and labels_a == labels_b and (img_a == img_b).all()


def test_verify_names_a_shard_table_the_manifest_no_longer_names(tmp_path, small_tables):
    from shards.verify import verify_split

    write_manifest(str(tmp_path), _manifest(_entries(4)))
    old = json.loads((tmp_path / "manifest.json").read_text())["shard_table"]["path"]
    write_manifest(str(tmp_path), _manifest(_entries(5)))  # a re-run with other options: another table
    problems = verify_split(str(tmp_path)).problems
    assert f"{tmp_path / old}: stray shard table the manifest does not name" in problems
    assert not any("stray shard table" in p and old not in p for p in problems)
