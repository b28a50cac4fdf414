"""Arrow IPC shards (`shard-NNNNNN.arrow`) with a declared schema, on open file objects."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, BinaryIO

import pyarrow as pa

from shards.errors import ShardFormatError

__all__ = ["ArrowShardWriter", "read_arrow_shard", "schema_to_json", "schema_from_json"]


class ArrowShardWriter:
    """Writes record batches that must match `schema` exactly into one Arrow IPC file.

    with ArrowShardWriter(f, schema) as w:
        w.write_rows([{"id": "XX2a", "labels": [1, 7], ...}])
    """

    def __init__(self, fileobj: BinaryIO, schema: pa.Schema, *, url: str = "<stream>"):
        self._schema = schema
        self._url = url
        self._writer = pa.ipc.new_file(fileobj, schema)
        self.num_rows = 0

    def write_batch(self, batch: pa.RecordBatch | pa.Table) -> None:
        if not batch.schema.equals(self._schema):
            raise ShardFormatError(
                f"batch schema {batch.schema} does not match the declared schema {self._schema}", url=self._url
            )
        if isinstance(batch, pa.Table):
            self._writer.write_table(batch)
        else:
            self._writer.write_batch(batch)
        self.num_rows += batch.num_rows

    def write_rows(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Convert Python rows with the declared schema; a value of the wrong type raises with the column."""
        try:
            batch = pa.RecordBatch.from_pylist(list(rows), schema=self._schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            raise ShardFormatError(f"rows do not fit the declared schema: {e}", url=self._url) from None
        self.write_batch(batch)

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> ArrowShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()


def read_arrow_shard(f: BinaryIO, *, url: str = "<stream>", schema: pa.Schema | None = None) -> pa.Table:
    """Read a whole Arrow shard; with `schema`, a shard whose schema differs raises ShardFormatError."""
    try:
        reader = pa.ipc.open_file(f)
        table = reader.read_all()
    except (pa.ArrowInvalid, OSError) as e:
        raise ShardFormatError(f"not a readable Arrow IPC file: {e}", url=url) from None
    if schema is not None and not table.schema.equals(schema):
        raise ShardFormatError(f"schema {table.schema} differs from the declared {schema}", url=url)
    return table


def schema_to_json(schema: pa.Schema) -> dict[str, str]:
    """column -> Arrow type string, for the manifest's `fields`."""
    return {f.name: str(f.type) for f in schema}


def schema_from_json(fields: Mapping[str, str]) -> pa.Schema:
    """Inverse of schema_to_json for the types this project writes."""
    return pa.schema([(name, _parse_type(t)) for name, t in fields.items()])


def _parse_type(text: str) -> pa.DataType:
    text = text.strip()
    if text.startswith("list<") and text.endswith(">"):
        inner = text[5:-1].split(":", 1)[-1]
        return pa.list_(_parse_type(inner))
    if text.startswith("fixed_size_list<") and text.endswith("]"):
        body, n = text[len("fixed_size_list<") :].rsplit(">[", 1)
        inner = body.split(":", 1)[-1]
        return pa.list_(_parse_type(inner), int(n[:-1]))
    try:
        return pa.type_for_alias(text)
    except ValueError:
        raise ValueError(f"unsupported Arrow type {text!r} in a manifest") from None
