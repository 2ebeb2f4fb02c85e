"""Start a local HTTP server as a child process and wait until it answers: the tests' and benchmarks' one way to
run ChatLab itself, or llama.cpp's OpenAI-compatible server, on a free port of 127.0.0.1."""
from __future__ import annotations

import contextlib
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence

import httpx


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serve(command: Sequence[str], ready_url: str, *, headers: Mapping[str, str] | None = None,
          env: Mapping[str, str] | None = None, cwd: str | None = None, start_timeout: float = 120.0,
          ) -> Iterator[subprocess.Popen]:
    """Run `command` until `ready_url` answers a GET with a 2xx, yield the process, and stop it afterwards
    (terminate, then kill after 10 s). RuntimeError, with the end of its output, if it exits or does not answer
    within `start_timeout` seconds."""
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(list(command), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=None if env is None else dict(env), cwd=cwd)
        try:
            deadline = time.monotonic() + start_timeout
            while True:
                if process.poll() is not None:
                    log.seek(0)
                    raise RuntimeError(f"{command[0]} exited with {process.returncode}: {log.read()[-1500:]}")
                try:
                    if httpx.get(ready_url, headers=dict(headers or {}), timeout=2).is_success:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError(f"{' '.join(command[:3])} did not answer at {ready_url} within "
                                       f"{start_timeout:g} s: {log.read()[-1500:]}")
                time.sleep(0.25)
            yield process
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
