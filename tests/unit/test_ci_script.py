"""`.ci/run` refuses to test without Chromium or the Pushgateway: the report
screenshot test and the metrics tests are part of the suite, so a failed
install must fail CI at once (it used to print a line and carry on). Run with
stub `apt-get` and `make` on a PATH that has neither; catches a `.ci/run` that
swallows a failed install."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _stub(folder: Path, name: str, body: str) -> None:
    p = folder / name
    p.write_text("#!/bin/sh\n" + body + "\n")
    p.chmod(0o755)


def _run_ci(tmp_path: Path, apt_get_rc: int, installs: tuple[str, ...]) -> tuple[subprocess.CompletedProcess, Path]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("dirname", "chmod", "touch"):
        os.symlink(shutil.which(tool), bin_dir / tool)
    made = tmp_path / "make-ran"
    _stub(bin_dir, "make", f"touch {made}")
    # `apt-get install ... PACKAGE` puts a command of the package's name on PATH when the package is in `installs`
    made_cmd = f"printf '#!/bin/sh\\n' > {bin_dir}/$last; chmod +x {bin_dir}/$last"
    known = " | ".join(installs) or "none-at-all"
    _stub(bin_dir, "apt-get", f'case "$1" in install) for last; do :; done\n'
                              f'  case "$last" in {known}) {made_cmd};; esac;; esac\nexit {apt_get_rc}')
    proc = subprocess.run([shutil.which("bash"), str(ROOT / ".ci" / "run")], capture_output=True, text=True,
                          env={"PATH": str(bin_dir), "HOME": str(tmp_path)}, timeout=60)
    return proc, made


def test_ci_fails_when_chromium_cannot_be_installed(tmp_path):
    proc, made = _run_ci(tmp_path, apt_get_rc=1, installs=())
    assert proc.returncode != 0
    assert "chromium could not be installed" in proc.stderr
    assert not made.exists(), "make test ran without chromium"


def test_ci_runs_make_test_once_chromium_is_installed(tmp_path):
    proc, made = _run_ci(tmp_path, apt_get_rc=0, installs=("chromium", "prometheus-pushgateway"))
    assert proc.returncode == 0, proc.stderr
    assert made.exists()


def test_ci_fails_when_the_pushgateway_is_missing_after_its_install(tmp_path):
    proc, made = _run_ci(tmp_path, apt_get_rc=0, installs=("chromium",))
    assert proc.returncode != 0
    assert "no prometheus-pushgateway on PATH" in proc.stderr
    assert not made.exists(), "make test ran without the Pushgateway"
