"""Where a pipeline may read data from: the reusable `DataUrl` type and a loader that cannot hang.

`DataUrl` is a plain pipeline annotation. The worker validates it with the context
`{"data_root": Path | None}` and is the authority on local paths. ZenML validates step
parameters again at run time without a context; then only the checks that need no
filesystem run (scheme, bucket, absolute path), so a run the worker planned still starts.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import IO, Annotated, Any
from urllib.parse import ParseResult, urlparse

from pydantic import AfterValidator, ValidationInfo

REMOTE_SCHEMES = ("s3", "gs", "az", "abfs")
"""The object stores ZenML's own artifact stores use. Remote data is simulated, never fetched;
http(s) stays out because a loader that fetched it would let any producer make the worker
request internal URLs."""
DATA_ROOT = "data_root"
"""The validation-context key naming the directory local paths must resolve under (None: refuse them)."""
LOCAL_HOSTS = ("", "localhost")


def local_csv_path(data_url: str) -> Path | None:
    """The local file a `data_url` names, or None when it is remote (then simulated)."""
    parsed = urlparse(data_url)
    if parsed.scheme == "file":
        return Path(parsed.path)
    if parsed.scheme == "" and data_url:
        return Path(data_url)
    return None


def check_data_url(data_url: str, info: ValidationInfo) -> str:
    """Refuse a `data_url` this pipeline cannot or must not read; the local-file rules need a context.

    Any context (even one without `data_root`) applies them, so a worker that passes one
    fails closed; only no context at all, as in ZenML's own run-time validation, skips them.
    """
    parsed = urlparse(data_url)
    if parsed.scheme in REMOTE_SCHEMES:
        if not parsed.netloc:
            raise ValueError(f"{parsed.scheme}:// URL names no bucket")
        return data_url
    path = _local_path(data_url, parsed)
    if info.context is not None:
        check_under_root(path, info.context.get(DATA_ROOT))
    return data_url


def _local_path(data_url: str, parsed: ParseResult) -> Path:
    """The absolute local path a plain path or file:// URL names."""
    if parsed.scheme not in ("", "file"):
        raise ValueError(f"scheme {parsed.scheme!r} is not supported; {supported()}")
    if parsed.netloc not in LOCAL_HOSTS:
        raise ValueError(f"{data_url!r} names host {parsed.netloc!r}; file URLs must be local")
    path = local_csv_path(data_url)
    if path is None or not path.is_absolute():
        raise ValueError(f"{data_url!r} is not an absolute path (/data/x.csv or file:///data/x.csv)")
    return path


def supported() -> str:
    """What `data_url` accepts, for error messages."""
    remote = ", ".join(f"{scheme}://" for scheme in REMOTE_SCHEMES)
    return f"use {remote}, or a local file (absolute path or file://) under the worker's data root"


def check_under_root(path: Path, root: Path | str | None) -> None:
    """`path` must resolve, through `..` and every symlink, to a regular file under `root`.

    Containment is checked before existence, so a path outside the root is refused the
    same way whether or not it exists.
    """
    if root is None:
        raise ValueError("local paths are refused: the worker has no data root (TRIGGER_DATA_ROOT)")
    try:
        resolved, base = path.resolve(), Path(root).resolve()
    except (OSError, RuntimeError, ValueError):  # a symlink loop, a NUL byte
        raise ValueError(f"{path} cannot be resolved") from None
    if not resolved.is_relative_to(base):
        raise ValueError(f"{path} resolves outside the data root {root}")
    try:
        mode = resolved.stat().st_mode
    except OSError:
        raise ValueError(f"{path} does not exist or cannot be read") from None
    if not stat.S_ISREG(mode):
        raise ValueError(f"{path} is not a regular file")


DataUrl = Annotated[str, AfterValidator(check_data_url)]
"""A data location: s3://, gs://, az:// or abfs:// (simulated), or a regular file under the data root."""


def open_regular_file(path: Path) -> IO[Any]:
    """Open `path` for reading, refusing anything but a regular file.

    Opening without blocking and checking the opened descriptor means a FIFO or device
    swapped in after validation fails at once instead of hanging the worker.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError(f"{path} is not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
