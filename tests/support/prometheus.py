"""The real Prometheus tools the observability tests use, from Debian's packages:

* `prometheus-pushgateway` (the Pushgateway; `.ci/run` installs the package):
  started per session on a free port, in memory (`--persistence.file=`), ready
  when `GET /-/ready` answers 200.
* `promtool` (checks and unit-tests alerting rules): on PATH when the
  `prometheus` package is installed; otherwise extracted from that package
  (`apt-get download prometheus && dpkg-deb -x`: a 19 MB download, ~7 s, no
  service, no dependencies installed) into `.emulators/promtool/` once.

Either is skipped with the reason only where it cannot be had at all.
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.support.emulators import EMULATORS

PUSHGATEWAY_NAMES = ("prometheus-pushgateway", "pushgateway")
PROMTOOL_DIR = EMULATORS / "promtool"
PROMTOOL_EXTRACTED = PROMTOOL_DIR / "usr" / "bin" / "promtool"


class Unavailable(RuntimeError):
    """The tool is not installed and cannot be obtained here; the message says why."""


def promtool() -> str:
    found = shutil.which("promtool")
    if found:
        return found
    if PROMTOOL_EXTRACTED.exists():
        return str(PROMTOOL_EXTRACTED)
    if not (shutil.which("apt-get") and shutil.which("dpkg-deb")):
        raise Unavailable("promtool not on PATH and no apt-get/dpkg-deb to extract it from Debian's `prometheus`")
    with tempfile.TemporaryDirectory() as tmp:
        got = subprocess.run(["apt-get", "download", "prometheus"], cwd=tmp, capture_output=True, text=True,
                             timeout=300)
        debs = list(Path(tmp).glob("prometheus_*.deb"))
        if got.returncode != 0 or not debs:
            raise Unavailable(f"promtool not on PATH and `apt-get download prometheus` failed: "
                              f"{(got.stderr or got.stdout).strip()[-300:]}")
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), f"{tmp}/x"], check=True, timeout=120)
        binary = Path(tmp) / "x" / "usr" / "bin" / "promtool"
        if not binary.exists():
            raise Unavailable(f"{debs[0].name} holds no usr/bin/promtool")
        PROMTOOL_EXTRACTED.parent.mkdir(parents=True, exist_ok=True)  # keep promtool only (95 MB unpacked)
        shutil.copy2(binary, PROMTOOL_EXTRACTED)
    return str(PROMTOOL_EXTRACTED)


@dataclass
class Pushgateway:
    url: str
    process: subprocess.Popen

    def scrape(self, job: str) -> dict[tuple[str, frozenset], float]:
        """{(metric, labels without job/instance): value} of one push group."""
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=5) as r:
            text = r.read().decode()
        out = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.labels.get("job") == job:
                    labels = frozenset((k, v) for k, v in s.labels.items() if k not in ("job", "instance"))
                    out[(s.name, labels)] = s.value
        return out

    def delete(self, job: str) -> None:
        req = urllib.request.Request(f"{self.url}/metrics/job/{job}", method="DELETE")
        urllib.request.urlopen(req, timeout=5).close()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_pushgateway(log_path: Path) -> Pushgateway:
    binary = next((b for b in map(shutil.which, PUSHGATEWAY_NAMES) if b), None)
    if binary is None:
        raise Unavailable("prometheus-pushgateway is not installed (`apt-get install prometheus-pushgateway`; "
                          ".ci/run installs it)")
    port = free_port()
    log = open(log_path, "w")
    proc = subprocess.Popen([binary, f"--web.listen-address=127.0.0.1:{port}", "--persistence.file=",
                             "--log.level=warn"], stdout=log, stderr=subprocess.STDOUT)
    gw = Pushgateway(f"http://127.0.0.1:{port}", proc)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the Pushgateway exited ({proc.returncode}): {log_path.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{gw.url}/-/ready", timeout=0.5) as r:
                if r.status == 200:
                    return gw
        except OSError:
            pass
        time.sleep(0.05)
    gw.stop()
    raise RuntimeError(f"the Pushgateway was not ready within 20 s: {log_path.read_text()[-2000:]}")
