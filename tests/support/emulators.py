"""Start and stop the real local emulators the integration tests talk to.

The emulators live in virtual environments of their own under `.emulators/`
(`make emulators` installs them):

* GCS: gcp-storage-emulator, data under `DATA_DIR/.cloudstorage`; ready when
  `GET /` answers 200. Clients find it through `STORAGE_EMULATOR_HOST`.
* BigQuery: bqemulator (DuckDB inside), in-memory; ready when `GET /readyz`
  answers 200. Clients find it through `BIGQUERY_EMULATOR_HOST`. Its gs://
  loads read `BQEMU_GCS_LOCAL_ROOT`, which is set to the GCS emulator's data
  folder so it sees what the GCS emulator stores.

Nothing here touches the environment of the test process: `conftest.py` sets
the emulator variables only inside the fixtures that need them.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EMULATORS = ROOT / ".emulators"
GCS_BIN = EMULATORS / "gcs" / "venv" / "bin" / "gcp-storage-emulator"
BQ_BIN = EMULATORS / "bq" / "venv" / "bin" / "bqemulator"
BQ_HOME = EMULATORS / "bq" / "home"
PROJECT = "test-project"
START_TIMEOUT_S = 60.0


class EmulatorError(RuntimeError):
    """An emulator is not installed or did not come up."""


@dataclass
class Emulator:
    name: str
    url: str  # http://127.0.0.1:PORT
    process: subprocess.Popen
    log_path: Path
    data_dir: Path
    project: str = PROJECT
    extra: dict = field(default_factory=dict)

    @property
    def storage_root(self) -> Path | None:
        """GCS only: the folder the objects are stored in (DATA_DIR/.cloudstorage)."""
        return self.extra.get("storage_root")

    @property
    def host_port(self) -> str:
        return self.url.split("://", 1)[1]

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the emulator's own process group (it was started in a new session)."""
        if self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(timeout_s)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _require(binary: Path) -> None:
    if not os.access(binary, os.X_OK):
        raise EmulatorError(
            f"emulator not installed: {binary} is missing. "
            f"Run `make emulators` in {ROOT} first.")


def _status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, OSError):
        return None


def _start(name: str, argv: list[str], env: dict, ready_url: str, url: str, log_path: Path,
           data_dir: Path, cwd: Path) -> Emulator:
    log = open(log_path, "ab")
    try:
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    finally:
        log.close()
    emu = Emulator(name, url, proc, log_path, data_dir)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if not emu.alive():
            raise EmulatorError(f"{name} emulator exited with code {proc.returncode} during "
                                f"start-up; log {log_path}:\n{emu.log_tail()}")
        if _status(ready_url) == 200:
            return emu
        time.sleep(0.1)
    emu.stop()
    raise EmulatorError(f"{name} emulator did not answer {ready_url} within {START_TIMEOUT_S:.0f} s; "
                        f"log {log_path}:\n{emu.log_tail()}")


def _base_env() -> dict:
    env = dict(os.environ)
    # The emulators must not inherit the variables that point clients at them.
    for k in ("STORAGE_EMULATOR_HOST", "BIGQUERY_EMULATOR_HOST", "PYTHONPATH"):
        env.pop(k, None)
    return env


def start_gcs(work_dir: Path, attempts: int = 3) -> Emulator:
    """gcp-storage-emulator on a free loopback port, storing under work_dir/.cloudstorage."""
    _require(GCS_BIN)
    work_dir.mkdir(parents=True, exist_ok=True)
    last = None
    for _ in range(attempts):  # a free port can be taken between the probe and the bind
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        argv = [str(GCS_BIN), "-d", str(work_dir), "start", "--host", "127.0.0.1",
                "--port", str(port), "-q"]
        try:
            emu = _start("GCS", argv, _base_env(), url + "/", url, work_dir / "emulator.log",
                         work_dir, cwd=work_dir)
        except EmulatorError as e:
            last = e
            continue
        emu.extra["storage_root"] = work_dir / ".cloudstorage"
        return emu
    raise last


def start_bigquery(work_dir: Path, gcs_root: Path | None = None, attempts: int = 3) -> Emulator:
    """bqemulator (in-memory) on free loopback ports; gs:// loads resolve under `gcs_root`."""
    _require(BQ_BIN)
    work_dir.mkdir(parents=True, exist_ok=True)
    env = _base_env()
    env.update({
        "HOME": str(BQ_HOME),  # the spatial extension is pre-installed there
        "BQEMU_ENABLE_FORMAT_EXTENSIONS": "false",  # Avro only; would try to download
        "BQEMU_UPLOAD_STAGING_DIR": str(work_dir / "uploads"),
    })
    if gcs_root is not None:
        Path(gcs_root).mkdir(parents=True, exist_ok=True)
        env["BQEMU_GCS_LOCAL_ROOT"] = str(gcs_root)
    last = None
    for _ in range(attempts):
        rest, grpc = free_port(), free_port()
        url = f"http://127.0.0.1:{rest}"
        argv = [str(BQ_BIN), "start", "--rest-host", "127.0.0.1", "--rest-port", str(rest),
                "--grpc-host", "127.0.0.1", "--grpc-port", str(grpc), "--project", PROJECT,
                "--log-level", "warning"]
        try:
            emu = _start("BigQuery", argv, env, url + "/readyz", url, work_dir / "emulator.log",
                         work_dir, cwd=work_dir)
        except EmulatorError as e:
            last = e
            continue
        emu.extra["grpc_port"] = grpc
        return emu
    raise last
