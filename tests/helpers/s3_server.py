"""A real S3-protocol server for tests: moto's standalone server, as s3fs tests itself.

``with S3Server() as s3: ...`` starts ``python -m moto.server`` on
127.0.0.1 at a free port in its own process and working directory, and
sets the credentials that the client and every process started afterwards
(Dask scheduler, workers) read from the environment: distinctive strings,
so a test can search every object, log and message for them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import urllib.request

from helpers.dask_processes import free_port

ACCESS_KEY = "AKIATESTKEYNEVERSTORED"
SECRET_KEY = "secret/never-stored-in-a-store-or-log+x7Q"


class S3Server:
    """``endpoint``, ``fs`` (an s3fs file system on it) and ``bucket`` once entered."""

    def __init__(self, bucket: str = "pipeline-test"):
        self.bucket = bucket
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self._saved: dict[str, str | None] = {}
        self._folder = tempfile.TemporaryDirectory()

    def __enter__(self) -> S3Server:
        credentials = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                       "AWS_DEFAULT_REGION": "us-east-1"}
        for name, value in credentials.items():
            self._saved[name] = os.environ.get(name)
            os.environ[name] = value
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            cwd=self._folder.name, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(self.endpoint + "/moto-api/", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.__exit__()
                    raise RuntimeError("moto's S3 server did not start") from None
                time.sleep(0.1)
        try:
            import s3fs

            s3fs.S3FileSystem.clear_instance_cache()
            self.fs = s3fs.S3FileSystem(endpoint_url=self.endpoint)
            self.fs.mkdir(self.bucket)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for name, value in self._saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._folder.cleanup()

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def objects(self, key: str = "") -> dict[str, bytes]:
        """Every object under ``key`` (relative name -> bytes)."""
        root = f"{self.bucket}/{key}".rstrip("/")
        self.fs.invalidate_cache()
        return {path[len(root) + 1:]: self.fs.cat_file(path) for path in self.fs.find(root)}
