"""A user's function as a shard writer's encoder (no Beam here: it runs in the writer processes): call it on one
input, check what it returns, and encode each field by its extension as WebDataset does.

    bytes -> as is; str -> UTF-8; int, float, bool -> decimal text (`cls`); dict or list -> JSON (`json`);
    NumPy array -> `.npy` bytes (`npy`), or a PNG/JPEG image (`png`, `jpg`); PIL image -> PNG/JPEG by extension
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from pipelines.common.errors import BadInput
from pipelines.common.records import Pointer
from shards.errors import SampleKeyError
from shards.keys import validate_ext, validate_key

__all__ = ["Expanded", "UserEncoder", "encode_field", "samples_of"]

IMAGE_FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP", "bmp": "BMP"}


DEFAULT_TIMEOUT = 600.0  # seconds a user's function may take on one input before it is quarantined


class _OutOfTime(BaseException):  # not an Exception: the user's own `except Exception` must not swallow it
    pass


@contextlib.contextmanager
def _time_limit(seconds: float | None) -> Iterator[None]:
    """Interrupt the block after `seconds` (SIGALRM: the writer processes run it on their main thread; where a
    runner calls it on another thread, there is no limit)."""
    import signal
    import threading

    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(_signum, _frame):
        raise _OutOfTime

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class Expanded(list):
    """What an encoder returns for an input that became several samples: [(key, sample or BadInput)]."""


def encode_field(ext: str, value: Any) -> bytes:
    """One field's bytes, by the last part of its extension (`seg.png` is a PNG)."""
    import numpy as np

    kind = ext.rsplit(".", 1)[-1].lower()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if kind in IMAGE_FORMATS and (isinstance(value, np.ndarray) or hasattr(value, "save")):
        from PIL import Image

        image = Image.fromarray(value) if isinstance(value, np.ndarray) else value
        buf = io.BytesIO()
        image.save(buf, IMAGE_FORMATS[kind], **({"quality": 95} if kind in ("jpg", "jpeg") else {}))
        return buf.getvalue()
    if kind == "npy" and isinstance(value, np.ndarray | np.generic | list | int | float):
        buf = io.BytesIO()
        np.save(buf, np.asarray(value), allow_pickle=False)
        return buf.getvalue()
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bool | int | float | np.integer | np.floating):
        return str(value.item() if isinstance(value, np.generic) else value).encode()
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, sort_keys=True).encode()
    raise BadInput(f"field {ext!r} is a {type(value).__name__}, which has no encoding as .{kind}", stage="encode")


def check_finite(ext: str, value: Any) -> None:
    """A NaN or infinity in a field is refused (BadInput): a label `nan` or a NaN feature reaches the model as a
    loss of NaN, far from the input that caused it. Floats, float arrays, and the numbers inside lists and dicts."""
    import math

    import numpy as np

    if isinstance(value, float | np.floating):
        ok = math.isfinite(value)
    elif isinstance(value, np.ndarray) and value.dtype.kind in "fc":
        ok = bool(np.isfinite(value).all())
    elif isinstance(value, dict):
        ok = True
        for v in value.values():
            check_finite(ext, v)
    elif isinstance(value, list | tuple):
        ok = True
        for v in value:
            check_finite(ext, v)
    else:
        ok = True
    if not ok:
        raise BadInput(f"field {ext!r} holds a NaN or an infinity", stage="convert")


def samples_of(result: Any) -> list[Mapping[str, Any]]:
    """The samples a user's function returned: one dict, or an iterable of dicts."""
    if result is None:
        raise BadInput("the function returned None, not a sample", stage="convert")
    if isinstance(result, Mapping):
        return [result]
    if isinstance(result, str | bytes) or not isinstance(result, Iterable):
        raise BadInput(f"the function returned a {type(result).__name__}, not a sample dict", stage="convert")
    try:
        out = list(result)
    except BadInput:
        raise
    except Exception as e:  # a generator that raised part-way: this input's quarantine reason
        text = (str(e).strip().splitlines() or [""])[0][:300]
        raise BadInput(
            f"the function raised {type(e).__name__} while yielding samples: {text}", stage="convert"
        ) from None
    for s in out:
        if not isinstance(s, Mapping):
            raise BadInput(f"the function yielded a {type(s).__name__}, not a sample dict", stage="convert")
    return out


class UserEncoder:
    """`encode(pointer, data)` for `write_shard`: `fn(input)` -> samples, each checked against the split's fields
    (tar: every declared field, no other; Arrow: the schema's columns) and encoded (tar) or kept as a row."""

    def __init__(
        self,
        fn: Callable[[Any], Any],
        fields: Iterable[str],
        *,
        format: str = "tar",
        schema: dict[str, str] | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ):
        self.fn, self.fields, self.format, self.schema, self.timeout = fn, tuple(fields), format, schema, timeout
        self._arrow = None

    def __getstate__(self) -> dict[str, Any]:
        """A function of the user's script (`__main__`) travels by value (cloudpickle, as Beam ships its own
        functions): the writer processes and a cluster's workers cannot import the launcher's `__main__` by name,
        and after Beam's own round trip it is no longer the object `__main__` holds. Others travel by name."""
        state = dict(self.__dict__, _arrow=None)
        if getattr(self.fn, "__module__", None) == "__main__":
            import cloudpickle

            state["fn"] = ("cloudpickle", cloudpickle.dumps(self.fn))
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        fn = state["fn"]
        if isinstance(fn, tuple) and len(fn) == 2 and fn[0] == "cloudpickle":
            import cloudpickle

            state["fn"] = cloudpickle.loads(fn[1])
        self.__dict__.update(state)

    def _input(self, p: Pointer) -> Any:
        if "input_pickle" in p.meta:
            import base64
            import pickle

            return pickle.loads(base64.b64decode(p.meta["input_pickle"]))
        return p.meta["input"]

    def __call__(self, p: Pointer, data: bytes) -> Expanded:
        try:
            with _time_limit(getattr(self, "timeout", DEFAULT_TIMEOUT)):
                result = self.fn(self._input(p))
                samples = samples_of(result)
        except _OutOfTime:
            raise BadInput(
                f"the function did not finish within {self.timeout:g}s (input_timeout)", stage="convert"
            ) from None
        except BadInput:
            raise
        except Exception as e:  # the user's code: its failure is this input's quarantine reason
            text = (str(e).strip().splitlines() or [""])[0][:300]
            raise BadInput(f"the function raised {type(e).__name__}: {text}", stage="convert") from None
        if not samples:
            raise BadInput("the function returned no sample", stage="filter")
        out = Expanded()
        for j, s in enumerate(samples):
            default = p.key if len(samples) == 1 else f"{p.key}_{j}"
            key = s.get("__key__", s.get("id", default) if self.format == "arrow" else default)
            try:
                out.append((key, self._one(key, s)))
            except BadInput as e:
                out.append((str(key), e))
        return out

    def _check_row(self, key: str, row: dict[str, Any]) -> None:
        import pyarrow as pa

        from shards.arrow import schema_from_json

        if self._arrow is None:
            self._arrow = schema_from_json(self.schema)
        try:
            pa.Table.from_pylist([row], schema=self._arrow)
        except (pa.ArrowException, TypeError, ValueError) as e:
            raise BadInput(f"sample {key!r} does not fit the split's schema: {e}", stage="convert") from None

    def _one(self, key: Any, s: Mapping[str, Any]) -> dict[str, Any]:
        try:
            validate_key(key)
        except SampleKeyError as e:
            raise BadInput(e.reason, stage="convert") from None
        got = sorted(k for k in s if k != "__key__" and not (self.format == "arrow" and k == "id"))
        if got != sorted(self.fields):
            raise BadInput(f"sample {key!r} has fields {got}; the split's are {sorted(self.fields)}", stage="convert")
        for ext in got:
            check_finite(ext, s[ext])
        if self.format == "arrow":  # a row; its key is the `id` column
            row = {"id": key, **{k: s[k] for k in self.fields}}
            if self.schema is not None:
                self._check_row(key, row)
            return row
        for ext in got:
            try:
                validate_ext(ext, key=key)
            except SampleKeyError as e:
                raise BadInput(e.reason, stage="convert") from None
        out = {}
        for ext in got:
            try:
                out[ext] = encode_field(ext, s[ext])
            except BadInput:
                raise
            except Exception as e:  # a value the format cannot hold (an object array as .npy, a 4-D image, ...)
                raise BadInput(
                    f"field {ext!r} ({type(s[ext]).__name__}) cannot be encoded: {e}", stage="convert"
                ) from None
        return out
