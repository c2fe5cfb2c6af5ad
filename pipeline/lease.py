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
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from pipeline.errors import UserError
from pipeline.storage import StorageOptions, filesystem, translate_errors

log = logging.getLogger(__name__)

#: How long a lease lasts without renewal, in seconds (renewed every third of it).
LEASE_SECONDS = 60.0


class LeaseError(UserError, RuntimeError):
    """Another run holds the store's lease, or this run lost it."""


@dataclass
class Lease:
    """A held lease: the object's URL, the version (ETag) this run last wrote, and when."""

    url: str
    storage: StorageOptions
    token: str
    etag: str
    seconds: float
    renewed: float = field(default_factory=time.time)
    lost: str | None = None  # why, once this run may no longer write

    def renew(self) -> None:
        """Extend the lease.  Mark it lost when another run took it over, when its object
        is gone, or when renewals have failed for two thirds of its time (a network
        error): before it expires and another run may take it."""
        fs, inner = filesystem(self.url, self.storage)
        try:
            written = fs.pipe_file(inner, _body(self.token, self.seconds), IfMatch=self.etag)
            self.etag, self.renewed = written["ETag"], time.time()
        except Exception as err:  # noqa: BLE001 (whatever it is, the lease must not die silently)
            try:
                holder, etag = _read(fs, inner)
            except Exception:  # noqa: BLE001 (the same trouble: nothing to learn from it now)
                holder, etag = {}, None
            if holder.get("token") == self.token:  # our own write went through, then a retry
                self.etag, self.renewed = etag, time.time()
            elif _conflict(err):
                self.lost = f"another run took its lease over ({_describe(holder)})"
            elif isinstance(err, FileNotFoundError):
                self.lost = "its lease object was deleted"
            elif time.time() > self.renewed + self.seconds * 2 / 3:
                self.lost = (f"it could not renew its lease for {time.time() - self.renewed:.0f} s "
                             f"({type(err).__name__}), and another run may take it over")

    def release(self) -> None:
        """Delete the lease object, unless another run holds it now; a failure only warns
        (the lease then expires by itself)."""
        fs, inner = filesystem(self.url, self.storage)
        try:
            if _read(fs, inner)[0].get("token") == self.token:
                fs.rm_file(inner)
        except Exception as err:  # noqa: BLE001 (the run's work is done; never fail it here)
            log.warning("%s: could not delete the lease object (%s); it expires within %.0f s",
                        self.url, type(err).__name__, self.seconds)


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
            lease.renew()  # never raises: a failure is recorded in lease.lost

    renewer = threading.Thread(target=renew_until_stopped, name="lease-renewal", daemon=True)
    renewer.start()
    try:
        yield lease
    finally:
        stop.set()
        renewer.join()
        lease.release()


def check_free(url: str, storage: StorageOptions, *, what: str = "this store") -> None:
    """Raise :class:`LeaseError` if a live run holds the lease at ``url``; never writes.

    For the commands to refuse before they start any workers; the lease is
    still taken (and the race settled) by :func:`hold_lease`.
    """
    fs, inner = filesystem(url, storage)
    with translate_errors(url, storage):
        holder, etag = _read(fs, inner)
    if etag is not None and not _expired(holder):
        raise _held(what, url, holder)


def _acquire(url: str, storage: StorageOptions, seconds: float, what: str) -> Lease:
    """Create the lease object, or take over an expired one; a few tries, as a holder may
    release it between our reads."""
    fs, inner = filesystem(url, storage)
    token = secrets.token_hex(8)
    for _ in range(3):
        with translate_errors(url, storage):
            try:
                written = fs.pipe_file(inner, _body(token, seconds), mode="create")
                return Lease(url, storage, token, written["ETag"], seconds)
            except Exception as err:  # noqa: BLE001
                if not _conflict(err):
                    raise
            holder, etag = _read(fs, inner)
            if holder.get("token") == token:  # our create went through, then a retry
                return Lease(url, storage, token, etag, seconds)
            if etag is None:
                continue  # released meanwhile: create it again
            if not _expired(holder):
                raise _held(what, url, holder)
            try:  # a dead run's lease: take it over, unless another run does so first
                written = fs.pipe_file(inner, _body(token, seconds), IfMatch=etag)
                return Lease(url, storage, token, written["ETag"], seconds)
            except Exception as err:  # noqa: BLE001
                if not _conflict(err):
                    raise
            holder, etag = _read(fs, inner)
            if holder.get("token") == token:
                return Lease(url, storage, token, etag, seconds)
            raise _held(what, url, holder)
    raise LeaseError(f"{url}: the store's lease object kept changing; try again")


def _held(what: str, url: str, holder: dict) -> LeaseError:
    return LeaseError(f"{what}: another run is writing to it (it holds {url}: "
                      f"{_describe(holder)}); wait for it to finish, or write elsewhere "
                      "with --out")


def _body(token: str, seconds: float) -> bytes:
    return json.dumps({**_this_process(), "token": token,
                       "expires": time.time() + seconds}).encode()


def _this_process() -> dict:
    """Host, process and what tells two machines (or containers) with one hostname apart:
    the kernel's boot id and the process-ID namespace (Linux; empty elsewhere)."""
    def read(read_it) -> str:
        try:
            return read_it().strip()
        except OSError:
            return ""

    return {"host": socket.gethostname(), "pid": os.getpid(),
            "boot": read(lambda: open("/proc/sys/kernel/random/boot_id").read()),
            "pidns": read(lambda: os.readlink("/proc/self/ns/pid"))}


def _read(fs, inner: str) -> tuple[dict, str | None]:
    """``(holder, etag)`` of the lease object; ``({}, None)`` when there is none.
    A body that is not a lease reads as ``{}`` (expired)."""
    fs.invalidate_cache(inner)
    try:
        etag = _etag(fs.info(inner))
        holder = json.loads(fs.cat_file(inner))
    except FileNotFoundError:
        return {}, None
    except ValueError:
        return {}, etag
    valid = isinstance(holder, dict) and isinstance(holder.get("expires"), (int, float)) \
        and isinstance(holder.get("pid", 0), int)
    return (holder if valid else {}), etag


def _expired(holder: dict) -> bool:
    """Past its time, or held by a process of this machine (same host, boot and process
    namespace) that no longer runs."""
    if float(holder.get("expires", 0)) < time.time():
        return True
    here = _this_process()
    same_machine = all(holder.get(key) == here[key] for key in ("host", "boot", "pidns"))
    return same_machine and bool(here["boot"]) and not _alive(int(holder.get("pid", 0)))


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


def _etag(info: dict) -> str | None:
    return info.get("ETag") or info.get("etag")


def _conflict(err: BaseException) -> bool:
    """A conditional write that failed: the object exists (412 on If-None-Match), changed
    (412 on If-Match), or another conditional write on it is in progress (409)."""
    if isinstance(err, FileExistsError):
        return True
    for cause in (err, err.__cause__):
        code = getattr(cause, "response", {}).get("Error", {}).get("Code")
        if code in ("PreconditionFailed", "ConditionalRequestConflict"):
            return True
    return False
