"""TFRecord files and `tf.train.Example` / `SequenceExample` without TensorFlow.

A TFRecord is `uint64 length | uint32 masked_crc32c(length) | payload | uint32 masked_crc32c(payload)`, little-
endian. The Example protos are built at run time from their descriptors (tensorflow/core/example/*.proto), so
parsing runs in protobuf's C implementation with no generated code and no TensorFlow.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any, BinaryIO, NamedTuple

__all__ = [
    "Example",
    "SequenceExample",
    "Record",
    "iter_records",
    "masked_crc32c",
    "encode_record",
    "feature_values",
]

_MASK_DELTA = 0xA282EAD8


def masked_crc32c(data: bytes) -> int:
    import google_crc32c

    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def encode_record(payload: bytes) -> bytes:
    """One TFRecord, byte for byte what TensorFlow's TFRecordWriter writes."""
    length = struct.pack("<Q", len(payload))
    return length + struct.pack("<I", masked_crc32c(length)) + payload + struct.pack("<I", masked_crc32c(payload))


class Record(NamedTuple):
    number: int  # 0-based position in the file
    offset: int  # of the payload
    length: int
    payload: bytes | None  # None when the record is damaged
    error: str | None


def iter_records(f: BinaryIO, *, read_payload: bool = True) -> Iterator[Record]:
    """Walk a TFRecord file, checking both CRCs. A damaged payload is reported and skipped; a damaged length
    ends the walk (nothing after it can be located), with the number of bytes left unread in the error."""
    pos, number = 0, 0
    while True:
        head = f.read(12)
        if not head:
            return
        if len(head) < 12:
            yield Record(
                number,
                pos,
                0,
                None,
                f"record {number} at byte {pos}: file ends inside a record header ({len(head)} of its 12 bytes left)",
            )
            return
        length_bytes, (crc,) = head[:8], struct.unpack("<I", head[8:])
        (length,) = struct.unpack("<Q", length_bytes)
        if masked_crc32c(length_bytes) != crc:
            rest = len(f.read())
            yield Record(
                number,
                pos,
                0,
                None,
                f"record {number} at byte {pos}: length CRC mismatch; the {rest + 12} bytes from here on cannot be "
                "split into records",
            )
            return
        payload = f.read(length)
        tail = f.read(4)
        if len(payload) < length or len(tail) < 4:
            left = len(payload) + len(tail)
            yield Record(
                number,
                pos + 12,
                length,
                None,
                f"record {number} at byte {pos}: file ends inside the record: {left} bytes left of the {length + 4} "
                "it declares (payload and CRC)",
            )
            return
        if masked_crc32c(payload) != struct.unpack("<I", tail)[0]:
            yield Record(number, pos + 12, length, None, f"record {number} at byte {pos}: data CRC mismatch")
        else:
            yield Record(number, pos + 12, length, payload if read_payload else None, None)
        pos += 12 + length + 4
        number += 1


def _classes() -> tuple[Any, Any]:
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    fd = descriptor_pb2.FileDescriptorProto(name="shardkit/tf_example.proto", package="tensorflow", syntax="proto3")
    F = descriptor_pb2.FieldDescriptorProto

    def message(name: str, fields: list[tuple[str, int, int, int, str | None]], *, map_entry: bool = False):
        m = fd.message_type.add(name=name)
        if map_entry:
            m.options.map_entry = True
        for fname, number, ftype, label, type_name in fields:
            f = m.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                f.type_name = type_name
            if ftype in (F.TYPE_FLOAT, F.TYPE_INT64) and label == F.LABEL_REPEATED:
                f.options.packed = True
        return m

    OPT, REP, MSG = F.LABEL_OPTIONAL, F.LABEL_REPEATED, F.TYPE_MESSAGE
    message("BytesList", [("value", 1, F.TYPE_BYTES, REP, None)])
    message("FloatList", [("value", 1, F.TYPE_FLOAT, REP, None)])
    message("Int64List", [("value", 1, F.TYPE_INT64, REP, None)])
    feature = message(
        "Feature",
        [
            ("bytes_list", 1, MSG, OPT, ".tensorflow.BytesList"),
            ("float_list", 2, MSG, OPT, ".tensorflow.FloatList"),
            ("int64_list", 3, MSG, OPT, ".tensorflow.Int64List"),
        ],
    )
    feature.oneof_decl.add(name="kind")
    for f in feature.field:
        f.oneof_index = 0
    features = message("Features", [("feature", 1, MSG, REP, ".tensorflow.Features.FeatureEntry")])
    entry = features.nested_type.add(name="FeatureEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=F.TYPE_STRING, label=OPT)
    entry.field.add(name="value", number=2, type=MSG, label=OPT, type_name=".tensorflow.Feature")
    message("FeatureList", [("feature", 1, MSG, REP, ".tensorflow.Feature")])
    lists = message("FeatureLists", [("feature_list", 1, MSG, REP, ".tensorflow.FeatureLists.FeatureListEntry")])
    entry = lists.nested_type.add(name="FeatureListEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=F.TYPE_STRING, label=OPT)
    entry.field.add(name="value", number=2, type=MSG, label=OPT, type_name=".tensorflow.FeatureList")
    message("Example", [("features", 1, MSG, OPT, ".tensorflow.Features")])
    message(
        "SequenceExample",
        [("context", 1, MSG, OPT, ".tensorflow.Features"), ("feature_lists", 2, MSG, OPT, ".tensorflow.FeatureLists")],
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    get = message_factory.GetMessageClass
    return get(pool.FindMessageTypeByName("tensorflow.Example")), get(
        pool.FindMessageTypeByName("tensorflow.SequenceExample")
    )


Example, SequenceExample = _classes()


def feature_values(feature: Any) -> list:
    """The values of a tf.train.Feature, whichever list it holds ([] when empty)."""
    kind = feature.WhichOneof("kind")
    return list(getattr(feature, kind).value) if kind else []
