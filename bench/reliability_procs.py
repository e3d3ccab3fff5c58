"""The real servers the reliability benchmark attacks, as subprocesses on loopback: `steerlab hub serve`,
`steerlab serve`, and a throwaway PostgreSQL cluster from the Debian binaries."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """A `python -m steerlab ...` server on one fixed loopback port, restartable after a kill -9."""

    def __init__(self, args: Sequence[str], log: Path, home: Path, startup_s: float = 300.0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = [sys.executable, "-m", "steerlab", *args, "--host", "127.0.0.1", "--port", str(self.port)]
        self.log, self.startup_s = log, startup_s
        # The servers' own state (publisher keys, trust files) stays inside the benchmark's folder.
        self.env = {**os.environ, "STEERLAB_HOME": str(home), "PYTHONUNBUFFERED": "1"}
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> float:
        """Start and wait for /health; the seconds it took."""
        t0 = time.perf_counter()
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.args, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        self.starts += 1
        deadline = time.monotonic() + self.startup_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{self.args[3:5]} exited with {self.proc.returncode}: {tail}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return time.perf_counter() - t0
            time.sleep(0.1)
        raise RuntimeError(f"{self.args[3:5]} did not answer /health within {self.startup_s} s")

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def wait_exit(self) -> None:
        if self.proc is not None:
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.kill9()

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def hub_server(root: Path, workdir: Path, *extra: str) -> ServerProcess:
    """`steerlab hub serve` of the store at `root` (its store.json names the catalogue)."""
    return ServerProcess(["hub", "serve", "--root", str(root), *extra], workdir / "hub.log", workdir / "home")


def hub_verify(root: Path, workdir: Path) -> tuple[int, str]:
    """`steerlab hub verify` as an operator runs it: exit status and output."""
    env = {**os.environ, "STEERLAB_HOME": str(workdir / "home")}
    cmd = [sys.executable, "-m", "steerlab", "hub", "verify", "--root", str(root)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    return done.returncode, (done.stdout + done.stderr).strip()


# ----- PostgreSQL: a cluster of its own on loopback, deleted afterwards -----
def postgres_bindir() -> Path | None:
    for initdb in sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True):
        return Path(initdb).parent
    found = shutil.which("initdb")
    return Path(found).resolve().parent if found else None


def _as_user(args: list[str]) -> list[str]:
    # initdb and pg_ctl refuse to run as root
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


@contextlib.contextmanager
def postgres_cluster() -> Iterator[str]:
    """A server URL (postgresql+psycopg://postgres@127.0.0.1:PORT); fsync off, since only crashes of the store
    server are tested here, not of PostgreSQL."""
    bindir = postgres_bindir()
    if bindir is None:
        raise RuntimeError("PostgreSQL is not installed (`make postgres` installs the Debian package)")
    base = Path(tempfile.mkdtemp(prefix="steerlab-bench-pg-"))
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    data, port = base / "data", free_port()
    initdb = [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8"]
    subprocess.run(_as_user(initdb), check=True, capture_output=True)
    options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
    pg_ctl = str(bindir / "pg_ctl")
    start = [pg_ctl, "-D", str(data), "-l", str(base / "log"), "-w", "-t", "60", "-o", options, "start"]
    subprocess.run(_as_user(start), check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run(_as_user([pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"]), capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def new_database(server_url: str) -> str:
    import psycopg

    name = f"bench_{uuid.uuid4().hex[:12]}"
    plain = server_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain + "/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{server_url}/{name}"
