"""One writer per store in object storage: a lease object beside the store.

A lock file cannot work on S3 (there is no lock, and no process whose
death releases one), so a run that writes ``s3://bucket/out.zarr`` holds
the object ``s3://bucket/out.zarr.lease`` instead:

* it is created with a conditional write (``If-None-Match: *``), so of two
  runs that start together exactly one creates it;
* it says who holds it (host, process, a random token) and until when; the
  holder renews it every ``seconds / 3`` with a write conditional on the
  version it last wrote (``If-Match: <ETag>``), so a lease taken over by
  another run is noticed at the next renewal;
* a lease past its time is taken over with the same conditional write, so
  a run that died (a killed client, a lost machine) blocks its store for at
  most ``seconds``; one whose holder is a dead process on this machine is
  taken over at once, as the operating system frees a dead process's lock;
* the holder deletes it when it ends.

Times are the holders' clocks: machines whose clocks disagree by more than
a fraction of ``seconds`` should use a longer lease.  S3 (and S3-protocol
servers that implement conditional writes: MinIO, Ceph, moto) is needed;
other object stores are refused by :func:`pipeline.store.guard_store`.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from pipeline.errors import UserError
from pipeline.storage import StorageOptions, filesystem

#: How long a lease lasts without renewal, in seconds (renewed every third of it).
LEASE_SECONDS = 60.0


class LeaseError(UserError, RuntimeError):
    """Another run holds the store's lease, or this run lost it."""


@dataclass
class Lease:
    """A held lease: the object's URL, and the version (ETag) this run last wrote."""

    url: str
    storage: StorageOptions
    token: str
    etag: str
    seconds: float
    lost: str | None = None  # why, once another run took the lease over

    def renew(self) -> None:
        """Extend the lease; on a version conflict, mark it lost (another run took it)."""
        fs, inner = filesystem(self.url, self.storage)
        try:
            written = fs.pipe_file(inner, _body(self.token, self.seconds), IfMatch=self.etag)
        except FileNotFoundError:
            self.lost = "its lease object was deleted"
            return
        except OSError as err:
            if _precondition_failed(err):
                self.lost = f"another run took its lease over ({_holder(fs, inner)})"
            return  # a passing network error: try again at the next renewal
        self.etag = written["ETag"]

    def release(self) -> None:
        """Delete the lease object, unless another run holds it now."""
        fs, inner = filesystem(self.url, self.storage)
        with contextlib.suppress(OSError):
            fs.invalidate_cache(inner)
            if _etag(fs.info(inner)) == self.etag:
                fs.rm_file(inner)


@contextlib.contextmanager
def hold_lease(url: str, storage: StorageOptions, *, seconds: float | None = None,
               what: str = "this store") -> Iterator[Lease]:
    """Hold the lease object at ``url`` while the block runs, renewing it in a thread.

    Check ``lease.lost`` between units of work: once set, another run
    writes the store and this one must stop.  ``seconds`` defaults to
    :data:`LEASE_SECONDS`.

    Raises
    ------
    LeaseError
        If another live run holds the lease (naming its host and until when).
    """
    seconds = LEASE_SECONDS if seconds is None else seconds
    lease = _acquire(url, storage, seconds, what)
    stop = threading.Event()

    def renew_until_stopped() -> None:
        while not stop.wait(seconds / 3) and lease.lost is None:
            lease.renew()

    renewer = threading.Thread(target=renew_until_stopped, name="lease-renewal", daemon=True)
    renewer.start()
    try:
        yield lease
    finally:
        stop.set()
        renewer.join()
        if lease.lost is None:
            lease.release()


def check_free(url: str, storage: StorageOptions, *, what: str = "this store") -> None:
    """Raise :class:`LeaseError` if a live run holds the lease at ``url``; never writes.

    For the commands to refuse before they start any workers; the lease is
    still taken (and the race settled) by :func:`hold_lease`.
    """
    fs, inner = filesystem(url, storage)
    fs.invalidate_cache(inner)
    if fs.exists(inner) and not _expired(holder := _read(fs, inner)):
        raise LeaseError(
            f"{what}: another run is writing to it (it holds {url}: {_describe(holder)}); "
            "wait for it to finish, or write elsewhere with --out")


def _acquire(url: str, storage: StorageOptions, seconds: float, what: str) -> Lease:
    fs, inner = filesystem(url, storage)
    token = secrets.token_hex(8)
    try:
        written = fs.pipe_file(inner, _body(token, seconds), mode="create")
        return Lease(url, storage, token, written["ETag"], seconds)
    except OSError as err:
        if not (isinstance(err, FileExistsError) or _precondition_failed(err)):
            raise LeaseError(f"{url}: cannot write the store's lease object "
                             f"({type(err).__name__}: {err})") from None
    fs.invalidate_cache(inner)
    etag, holder = _etag(fs.info(inner)), _read(fs, inner)
    if not _expired(holder):
        raise LeaseError(
            f"{what}: another run is writing to it (it holds {url}: {_describe(holder)}); "
            "wait for it to finish, or write elsewhere with --out")
    try:  # a dead run's lease: take it over, unless another run does so first
        written = fs.pipe_file(inner, _body(token, seconds), IfMatch=etag)
    except OSError as err:
        if _precondition_failed(err):
            raise LeaseError(f"{what}: another run has just taken over its lease ({url}); "
                             "wait for it to finish, or write elsewhere with --out") from None
        raise
    return Lease(url, storage, token, written["ETag"], seconds)


def _body(token: str, seconds: float) -> bytes:
    return json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "token": token,
                       "expires": time.time() + seconds}).encode()


def _read(fs, inner: str) -> dict:
    try:
        return json.loads(fs.cat_file(inner))
    except (OSError, ValueError):
        return {}  # unreadable or vanished: treated as expired


def _expired(holder: dict) -> bool:
    """Past its time, or held by a process of this machine that no longer runs."""
    if float(holder.get("expires", 0)) < time.time():
        return True
    return holder.get("host") == socket.gethostname() and not _alive(int(holder.get("pid", 0)))


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _describe(holder: dict) -> str:
    until = time.strftime("%H:%M:%S", time.localtime(float(holder.get("expires", 0))))
    return f"process {holder.get('pid')} on {holder.get('host')}, until {until} unless renewed"


def _holder(fs, inner: str) -> str:
    return _describe(_read(fs, inner))


def _etag(info: dict) -> str | None:
    return info.get("ETag") or info.get("etag")


def _precondition_failed(err: OSError) -> bool:
    """s3fs reports a failed conditional write (HTTP 412) as an OSError naming it."""
    text = f"{err} {getattr(err, '__cause__', '')}"
    return "PreconditionFailed" in text or "412" in text or isinstance(err, FileExistsError)
