"""Store clients raise their own exception types (botocore's EndpointConnectionError is no OSError): every call of
`shards.storage` that touches a store turns them into StoreError naming the URL, so commands answer in one line
and callers that handle OSError (the loaders' retries, the jobs' checks) see them."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

__all__ = ["StoreError", "store_errors", "translated"]

_STORE_LIBS = {"botocore", "aiobotocore", "aiohttp", "s3fs", "gcsfs", "google", "requests", "urllib3"}
F = TypeVar("F", bound=Callable[..., Any])


class StoreError(OSError):
    """A store's client failed (an unreachable endpoint, a refused request): one line naming the URL."""


@contextlib.contextmanager
def store_errors(url: str) -> Iterator[None]:
    """Inside: a store client's own exception becomes StoreError naming `url`; every other one passes."""
    try:
        yield
    except (OSError, ValueError, TypeError, KeyError, ImportError):
        raise
    except Exception as e:
        if type(e).__module__.split(".")[0] not in _STORE_LIBS:
            raise
        text = (str(e).strip().splitlines() or [""])[0][:300]
        raise StoreError(f"{url}: the store failed: {type(e).__name__}: {text}") from e


def translated(fn: F) -> F:
    """`fn(url, ...)` with `store_errors(url)` around it."""

    @functools.wraps(fn)
    def call(url, *args, **kwargs):
        with store_errors(url):
            return fn(url, *args, **kwargs)

    return call  # type: ignore[return-value]
