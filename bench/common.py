"""What the benchmarks share: progress lines, the machine, the server they make databases on,
and `deenroll` started as a child process."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import click
import psycopg

from bench import servers
from bench.servers import Server
from deenroll.errors import one_line

RUNNER_MAX_RUNTIME_MS = 3_600_000  # a measured run must never end on its time budget


def say(tag: str, msg: str) -> None:
    """Progress on stderr (the figures go to stdout), stamped with the benchmark's tag and the time."""
    print(f"[{tag} {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- machine and server


def machine_info() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor() or "unknown"
    mem_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
                break
    except OSError:
        pass
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 0
    return {
        "nproc": cpus,
        "cpu_model": cpu,
        "ram_gb": mem_gb,
        "kernel": platform.release(),
        "os": platform.platform(terse=True),
        "python": platform.python_version(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }


def new_db(server: Server, label: str, template: str | None = None) -> str:
    """A database of this benchmark process (its process id in the name, a leftover of that name
    replaced), cloned with FILE_COPY; its name."""
    name = f"deenroll_bench_{os.getpid()}_{label}"
    server.drop_db(name)
    server.create_db(name, template, file_copy=True)
    return name


_NO_CHECKPOINT: set[str] = set()  # servers (admin DSNs) whose login may not CHECKPOINT


def checkpoint(server: Server) -> bool:
    """CHECKPOINT before a measurement, so it does not pay for earlier writes (needs the right)."""
    if server.admin_dsn in _NO_CHECKPOINT:
        return False
    try:
        with server.admin() as conn:
            conn.execute("CHECKPOINT")
    except psycopg.Error as exc:
        say("bench", f"CHECKPOINT not allowed ({one_line(exc)}); measuring without it")
        _NO_CHECKPOINT.add(server.admin_dsn)
        return False
    return True


@contextmanager
def open_server(database_url: str | None) -> Iterator[Server]:
    """The given server, else a private embedded one; the databases made on it dropped at the end."""
    started = (nullcontext(Server(database_url, "given")) if database_url else
               servers.embedded("deenroll-bench-", lambda base: say(
                   "bench", f"starting a private embedded PostgreSQL in {base} (deleted at the end)")))
    with started as server:
        try:
            yield server
        finally:
            server.drop_created(lambda name, exc: say("bench", f"could not drop {name}: {exc}"))


# --------------------------------------------------------------------------- deenroll as a child


def deenroll_exe() -> str:
    """The `deenroll` console script installed next to this Python (else the one on PATH)."""
    exe = Path(sys.executable).parent / "deenroll"
    if exe.exists():
        return str(exe)
    found = shutil.which("deenroll")
    if not found:
        raise click.ClickException("the `deenroll` command is not installed next to this Python (scripts/bench.sh installs it)")
    return found


@dataclass(frozen=True)
class Finished:
    """How a child ended: its exit code, seconds since its start, peak RSS (None when it was
    reaped before `finish`), its output and the JSON on its stdout (None without)."""

    code: int
    wall_s: float
    peak_rss_mb: float | None
    stdout: str
    stderr: str
    report: dict[str, Any] | None

    @property
    def last_line(self) -> str:
        """The last line of stderr that is not blank."""
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        return lines[-1] if lines else ""


@dataclass
class Child:
    """`deenroll --database-url DSN ARGS` running with its output in temporary files."""

    proc: subprocess.Popen[bytes]
    started: float  # perf_counter
    out: IO[bytes]
    err: IO[bytes]

    @classmethod
    def start(cls, dsn: str, *args: str, code: Path | None = None) -> Child:
        """`code`: a directory holding another release's deenroll package, run instead of the installed one."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("DE_ENROLLMENT_") and k != "DATABASE_URL"}
        env.setdefault("LOG_LEVEL", "warning")
        if code is not None:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(code), env.get("PYTHONPATH")]))
        out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
        started = time.perf_counter()
        proc = subprocess.Popen([deenroll_exe(), "--database-url", dsn, *args], stdout=out, stderr=err, env=env)
        return cls(proc, started, out, err)

    def finish(self, timeout: float | None = None) -> Finished:
        """Waits for the exit; a child still running after `timeout` seconds is killed."""
        peak_rss_mb = None
        if self.proc.returncode is None:  # not reaped by a poll() yet: its resource usage is ours to read
            killer = threading.Timer(timeout, self.proc.kill) if timeout is not None else None
            if killer:
                killer.start()
            try:
                _, status, usage = os.wait4(self.proc.pid, 0)
            finally:
                if killer:
                    killer.cancel()
            self.proc.returncode = os.waitstatus_to_exitcode(status)
            peak_rss_mb = usage.ru_maxrss / 1024.0  # ru_maxrss is in KiB
        wall_s = time.perf_counter() - self.started
        texts = []
        for f in (self.out, self.err):
            f.seek(0)
            texts.append(f.read().decode(errors="replace"))
            f.close()
        try:
            report = json.loads(texts[0])
        except json.JSONDecodeError:
            report = None
        return Finished(self.proc.returncode, wall_s, peak_rss_mb, texts[0], texts[1], report)


def run_child(dsn: str, *args: str) -> Finished:
    """`deenroll --database-url DSN run --json ARGS` as a child, its report read; wall time and peak RSS."""
    done = Child.start(dsn, "run", "--json", "--max-runtime", str(RUNNER_MAX_RUNTIME_MS), *args).finish()
    if done.report is None:
        raise click.ClickException(f"`deenroll run` exited {done.code} without a JSON report: {done.stderr.strip()[-500:]}")
    return done
