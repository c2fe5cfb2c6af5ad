"""Where data lives: local paths, or fsspec URLs to object storage (``s3://``, ``gs://``, ...).

Every path the project takes (``dataset.path``, ``store.path``, ``basis``)
may be a URL such as ``s3://bucket/imagenet/val``; local paths take the same
code paths as before.  How to reach the object store is the config's
``storage_options`` section (:class:`StorageOptions`): an endpoint, a named
profile, anonymous access.  Credentials are never part of it: they come
from where the provider's own tools look (``AWS_ACCESS_KEY_ID`` and
friends, ``~/.aws/credentials``, an instance role), on the client and on
each worker, so no store attribute, manifest, log line or message can
carry them.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from pipeline.errors import UserError

#: Keys of fsspec's storage options that hold secrets: refused in a config.
CREDENTIAL_KEYS = ("key", "secret", "token", "password", "account_key", "sas_token",
                   "aws_access_key_id", "aws_secret_access_key", "aws_session_token",
                   "credentials")

_URL = re.compile(r"^(?P<protocol>[a-z][a-z0-9+.-]*)://", re.IGNORECASE)


@dataclass(frozen=True)
class StorageOptions:
    """How to reach object storage; the config's ``storage_options`` section.

    ``endpoint_url`` is an S3-protocol server other than AWS (MinIO, Ceph,
    a test server); ``anon`` reads public buckets without credentials;
    ``profile`` names a profile of the provider's config files
    (``~/.aws/config``); ``region`` the bucket's region.  Keys that hold
    secrets are refused (:data:`CREDENTIAL_KEYS`): put credentials where the
    provider's tools look, on the client and on every worker.
    """

    endpoint_url: str | None = None
    anon: bool = False
    profile: str | None = None
    region: str | None = None

    def __post_init__(self) -> None:
        if self.endpoint_url and not self.endpoint_url.startswith(("http://", "https://")):
            raise ValueError(f"storage_options.endpoint_url must start with http:// or "
                             f"https://, got {self.endpoint_url!r}")

    def for_protocol(self, protocol: str) -> dict[str, Any]:
        """fsspec keyword arguments for a file system of ``protocol`` (``s3``, ``gs``, ...)."""
        if protocol in ("s3", "s3a"):
            options: dict[str, Any] = {"anon": self.anon}
            if self.endpoint_url:
                options["endpoint_url"] = self.endpoint_url
            if self.profile:
                options["profile"] = self.profile
            if self.region:
                options["client_kwargs"] = {"region_name": self.region}
            return options
        if protocol in ("gs", "gcs"):
            options = {"token": "anon"} if self.anon else {}
            if self.endpoint_url:
                options["endpoint_url"] = self.endpoint_url
            return options
        return {"anon": True} if self.anon else {}


def is_url(path: str | Path | None) -> bool:
    """True for ``protocol://...`` other than ``file://``."""
    match = _URL.match(str(path)) if path is not None and not isinstance(path, Path) else None
    return bool(match) and match.group("protocol").lower() != "file"


def protocol_of(url: str) -> str:
    """``"s3"`` for ``s3://bucket/key``; ``"file"`` for a local path."""
    match = _URL.match(url)
    return match.group("protocol").lower() if match else "file"


def location(path: str | Path) -> str | Path:
    """A URL as it is (a string), a local path as an expanded :class:`Path`."""
    if is_url(path):
        return str(path).rstrip("/")
    text = str(path)
    return Path(text[len("file://"):] if text.startswith("file://") else text).expanduser()


def join(base: str | Path, *parts: str) -> str | Path:
    """``base / part / ...`` for a local path or a URL."""
    if isinstance(base, Path) or not is_url(base):
        return Path(location(base)).joinpath(*parts)
    return "/".join([str(base).rstrip("/"), *(p.strip("/") for p in parts)])


def name_of(path: str | Path) -> str:
    """The last part of a path or URL: ``s3://b/sets/photos-k10`` -> ``photos-k10``."""
    return PurePosixPath(str(path).rstrip("/")).name


def sibling(path: str | Path, suffix: str) -> str | Path:
    """``<path><suffix>`` beside ``path``: ``s3://b/out.zarr`` -> ``s3://b/out.zarr.lease``."""
    if isinstance(path, Path):
        return path.with_name(path.name + suffix)
    return str(path).rstrip("/") + suffix


def filesystem(url: str, storage: StorageOptions = StorageOptions()):
    """``(fs, path)``: the fsspec file system of ``url`` and the path within it.

    Instances are cached by fsspec, so asking again is cheap.
    """
    import fsspec  # noqa: PLC0415 (object storage only)

    try:
        return fsspec.core.url_to_fs(url, **storage.for_protocol(protocol_of(url)))
    except (ImportError, ValueError) as err:
        raise StorageError(f"{url}: cannot open this kind of URL ({err}); for s3:// install "
                           "s3fs, for gs:// gcsfs, for az:// adlfs") from None


def zarr_options(url: str | Path, storage: StorageOptions) -> dict[str, Any] | None:
    """``storage_options`` for zarr's ``open_group``/``open``: None for a local path."""
    return storage.for_protocol(protocol_of(url)) if is_url(url) else None


def open_file(path: str | Path, storage: StorageOptions = StorageOptions(), mode: str = "rb"):
    """Open a local file or an object for reading or writing (a file object)."""
    if not is_url(path):
        return open(path, mode)  # noqa: SIM115 (the caller closes it)
    fs, inner = filesystem(str(path), storage)
    return fs.open(inner, mode)


@contextlib.contextmanager
def translate_errors(url: str | Path, storage: StorageOptions) -> Iterator[None]:
    """Turn what object storage raises (no credentials, an unreachable endpoint, a missing
    bucket, access denied) into one :class:`StorageError` sentence naming the URL.

    Errors the project raises itself pass unchanged; so does a missing object
    (``FileNotFoundError``) other than a missing bucket, which callers handle.
    """
    try:
        yield
    except UserError:
        raise
    except Exception as err:
        reason = _storage_reason(err, storage)
        if reason is None:
            raise
        raise StorageError(f"{redact(str(url))}: {reason}") from None


def _storage_reason(err: Exception, storage: StorageOptions) -> str | None:
    name, text = type(err).__name__, str(err)
    if name in ("NoCredentialsError", "PartialCredentialsError"):
        return ("no credentials found: set them where the provider's tools look, on the client "
                "and on every worker (for S3: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or "
                "a profile in ~/.aws/credentials named by storage_options.profile)")
    if name == "ProfileNotFound":
        return f"profile {storage.profile!r} (storage_options.profile) is not in ~/.aws/config"
    if name in ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError",
                "SSLError", "ClientConnectorError", "ConnectionClosedError"):
        endpoint = storage.endpoint_url or "its default endpoint"
        return (f"cannot reach the object store at {endpoint} ({name}); check "
                "storage_options.endpoint_url and the network")
    if "bucket does not exist" in text or "NoSuchBucket" in text:
        return "its bucket does not exist"
    if isinstance(err, PermissionError) or "AccessDenied" in text or "Forbidden" in text:
        return f"access denied ({text}); check the credentials' permissions"
    if isinstance(err, FileNotFoundError):
        return None
    if name in ("ParamValidationError", "ClientError") or isinstance(err, OSError):
        return f"{name}: {text}"
    return None


def redact(url: str) -> str:
    """``url`` without a ``user:password@`` part, for logs and records."""
    return re.sub(r"^([a-z][a-z0-9+.-]*://)[^/@]*@", r"\1", str(url), flags=re.IGNORECASE)


class StorageError(UserError, ValueError):
    """A URL cannot be opened (an fsspec implementation is missing)."""
