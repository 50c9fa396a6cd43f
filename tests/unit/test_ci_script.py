"""`.ci/run` refuses to test without Chromium: the report screenshot test is
part of the suite, so a failed install must fail CI at once (it used to print
a line and carry on). Run with stub `apt-get` and `make` on a PATH that has no
chromium; catches a `.ci/run` that swallows the failed install."""
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


def _run_ci(tmp_path: Path, apt_get_rc: int, installs: bool) -> tuple[subprocess.CompletedProcess, Path]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("dirname", "chmod", "touch"):
        os.symlink(shutil.which(tool), bin_dir / tool)
    made = tmp_path / "make-ran"
    _stub(bin_dir, "make", f"touch {made}")
    chromium = f"printf '#!/bin/sh\\n' > {bin_dir}/chromium; chmod +x {bin_dir}/chromium" if installs else ":"
    _stub(bin_dir, "apt-get", f'case "$1" in install) {chromium};; esac\nexit {apt_get_rc}')
    proc = subprocess.run([shutil.which("bash"), str(ROOT / ".ci" / "run")], capture_output=True, text=True,
                          env={"PATH": str(bin_dir), "HOME": str(tmp_path)}, timeout=60)
    return proc, made


def test_ci_fails_when_chromium_cannot_be_installed(tmp_path):
    proc, made = _run_ci(tmp_path, apt_get_rc=1, installs=False)
    assert proc.returncode != 0
    assert "chromium could not be installed" in proc.stderr
    assert not made.exists(), "make test ran without chromium"


def test_ci_runs_make_test_once_chromium_is_installed(tmp_path):
    proc, made = _run_ci(tmp_path, apt_get_rc=0, installs=True)
    assert proc.returncode == 0, proc.stderr
    assert made.exists()
