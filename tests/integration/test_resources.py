"""A full disk, a read-only output root and a nearly full one, on small
filesystems the tests create (a tmpfs mount, which needs root and the mount
capability: skipped with the reason where the machine does not allow it; the
read-only test falls back to file permissions for a user other than root).

On the previous main a full disk during the warehouse load ended in DuckDB's
traceback (a failed ROLLBACK could hide the cause) and left nothing to finish
the publish; a read-only root was found only when the pipeline had run and
wrote its first file (an OSError traceback); a nearly full root likewise."""
from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import uuid

import pytest

from jobs import layout
from jobs.snapshots import store
from pipelines import storage
from tests.support import invariants as inv
from tests.support import worlds
from tests.support.lifecycle import LOGS2, agreement_problems, oasis, two_snapshots


def one_error_line(err: str, command: str = "oasis run") -> str:
    lines = [line for line in err.splitlines() if line.startswith(f"{command}: error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _mount_reason() -> str | None:
    if os.geteuid() != 0:
        return "mounting a small filesystem needs root"
    if shutil.which("mount") is None:
        return "no mount command on this machine"
    return None


@contextlib.contextmanager
def small_filesystem(path: str, size: str):
    """A tmpfs of `size` at `path`, unmounted afterwards; skips the test with the
    reason when it cannot be mounted here."""
    reason = _mount_reason()
    if reason:
        pytest.skip(reason)
    os.makedirs(path, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", path],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", path], capture_output=True)


def fill(path: str) -> str:
    """Fill the filesystem of `path`; returns the filler file (delete it to free the space)."""
    filler = os.path.join(path, f"filler-{uuid.uuid4().hex[:6]}")
    with open(filler, "wb", buffering=0) as f:
        for size in (65536, 4096, 512, 1):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError:
                pass
    assert shutil.disk_usage(path).free < 65536
    return filler


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    return two_snapshots(tmp_path_factory)


# ---------------------------------------------------------------- disk full ---
def test_a_full_disk_during_the_warehouse_load_is_one_line_and_the_next_run_finishes(two, tmp_path):
    """The warehouse file's disk fills up during the publish: one line naming
    the file and "no space left on device" (not a failed ROLLBACK), LATEST and
    the warehouse as they were; once there is room the next run of the date
    finishes that publish (the manifest was written) and says so."""
    out = two.copy(str(tmp_path / "out"))
    with small_filesystem(str(tmp_path / "small"), "8m") as small:
        wh = os.path.join(small, "warehouse.duckdb")
        shutil.copy(os.path.join(out, "warehouse.duckdb"), wh)
        args = ["run", "--date", "2026-11-22", "--input", two.world, "--output", out, "--warehouse", wh]
        filler = fill(small)
        code, _, err = oasis(*args)
        line = one_error_line(err)
        assert code == 1 and wh in line and "no space left on device" in line and "ROLLBACK" not in line, line
        assert inv.latest(out) == inv.target(two.s2["score_date"], two.s2["snapshot_id"])
        new = [d for d in worlds.snapshot_dirs(out) if "score_date=2026-11-23" in d]
        assert len(new) == 1  # the snapshot is complete (manifest written), not yet in the warehouse

        os.remove(filler)
        code, _, err = oasis(*args)
        assert code == 0, err
        assert f"finishing the publish of {os.path.basename(new[0])}" in err
        assert "the warehouse does not hold it" in err
        shutil.copy(wh, os.path.join(out, "warehouse.duckdb"))
    held, problems = inv.warehouse_state(out, "2026-11-23")
    assert held == os.path.basename(new[0]) and not problems
    assert not agreement_problems(out)


def test_a_pointer_write_on_a_full_disk_names_the_file_and_leaves_no_temporary(tmp_path):
    """LATEST (and any whole-file write) on a full disk: a StorageError naming
    the file, the old pointer intact, no LATEST.tmp-* left behind (main left one
    and raised a bare OSError)."""
    with small_filesystem(str(tmp_path / "small"), "1m") as small:
        uri = layout.latest_uri(small)
        storage.write_bytes(uri, b"score_date=2026-11-24/20261124T000000Z-aaaaaa\n")
        fill(small)
        with pytest.raises(storage.StorageError, match=f"{uri}: no space left on device"):
            store.move_latest(small, __import__("datetime").date(2026, 11, 25), "20261125T000000Z-bbbbbb")
        with pytest.raises(storage.StorageError, match="no space left on device"):
            storage.create_only(os.path.join(small, "snapshots", "x", "_MANIFEST.json"), b"{}" * 100_000)
        assert storage.read_pointer(uri).content == "score_date=2026-11-24/20261124T000000Z-aaaaaa"
        assert not glob.glob(os.path.join(small, "**", "*.tmp-*"), recursive=True)


# ------------------------------------------------------ read-only, near full ---
def test_a_read_only_output_root_fails_before_the_pipeline(two, tmp_path):
    """A read-only output root: one line naming it, before any work (no "run
    <id>:" line, no new folder); reading commands still work on it."""
    if os.geteuid() == 0:
        ctx = small_filesystem(str(tmp_path / "ro"), "64m")
    else:
        ctx = contextlib.nullcontext(str(tmp_path / "ro"))
    with ctx as root:
        out = two.copy(os.path.join(root, "out"))
        if os.geteuid() == 0:
            proc = subprocess.run(["mount", "-o", "remount,ro", root], capture_output=True, text=True)
            if proc.returncode:
                pytest.skip(f"cannot remount read-only: {proc.stderr.strip()}")
        else:
            for d, _, _ in os.walk(out):
                os.chmod(d, 0o555)
        try:
            code, _, err = oasis("run", "--date", LOGS2, "--input", two.world, "--output", out, "--force")
            line = one_error_line(err)
            assert code == 1 and f"the output root {out} cannot be written" in line
            assert "read-only file system" in line or "permission denied" in line
            assert "run 2026" not in err and len(worlds.snapshot_dirs(out)) == 2
            code, text, err = oasis("snapshots", "list", "--output", out)
            assert code == 0 and two.s2["snapshot_id"] in text, err
        finally:
            if os.geteuid() != 0:
                for d, _, _ in os.walk(out):
                    os.chmod(d, 0o755)


def test_a_nearly_full_output_root_fails_before_the_pipeline(two, tmp_path):
    """Less free space than a run needs: one line with the figures, before any work."""
    with small_filesystem(str(tmp_path / "small"), "32m") as small:
        out = two.copy(os.path.join(small, "out"))
        code, _, err = oasis("run", "--date", LOGS2, "--input", two.world, "--output", out, "--force")
        line = one_error_line(err)
        assert code == 1 and f"MB free on the filesystem of {out}" in line and "needs about 64 MB" in line, line
        assert "run 2026" not in err
