"""One storage layer for the whole job: local folders and gs:// URIs.

Data goes through `pyarrow.fs` (random access for Parquet, streaming writes).
The two operations that need stronger guarantees than a plain write use the
backend's own primitive:

* `create_only(uri, data)`: exclusive create. Locally `open(..., "xb")` on a
  temporary name plus `os.link` (fails if the target exists); on GCS an upload
  with `if_generation_match=0`.
* `replace_pointer(uri, data, expected)`: compare-and-swap of a small pointer
  file. Locally an exclusive lock (flock on a lock file, released by the kernel
  if its holder is killed) around read-compare-rename; on GCS an
  upload with `if_generation_match=<generation read>`.

`STORAGE_EMULATOR_HOST` is honoured (anonymous access to the emulator);
otherwise Application Default Credentials apply.
"""
from __future__ import annotations

import functools
import os
import posixpath
import time
import uuid
from dataclasses import dataclass

import pyarrow.fs as pafs


class AlreadyExists(Exception):
    """create_only found the object already there."""


class PointerMoved(Exception):
    """replace_pointer found the pointer changed since it was read."""


def is_gcs(uri: str) -> bool:
    return str(uri).startswith("gs://")


def join(root: str, *parts: str) -> str:
    root = str(root)
    if is_gcs(root):
        return "gs://" + posixpath.join(root[5:].rstrip("/"), *parts)
    return os.path.join(root, *parts)


def emulator_host() -> str | None:
    host = os.environ.get("STORAGE_EMULATOR_HOST")
    return host.rstrip("/") if host else None


def anonymous_beam_gcs() -> tuple[object, object] | None:
    """Make Beam's own GCS client (its `FileSystems`, gcsio) connect anonymously
    at once. For the emulator only: callers use it when STORAGE_EMULATOR_HOST is
    set (`use_emulator_for_beam`).

    Without credentials Beam retries `google.auth.default()` with exponential
    back-off (about 20-25 s) before falling back to an anonymous client. Marking
    its credentials as already resolved to None skips that. Returns the previous
    (init flag, credentials) so a caller can restore them; None when Beam's GCP
    extra is not installed.
    """
    try:
        from apache_beam.internal.gcp import auth
    except ImportError:
        return None
    prev = (auth._Credentials._credentials_init, auth._Credentials._credentials)
    auth._Credentials._credentials_init = True
    auth._Credentials._credentials = None
    return prev


def use_emulator_for_beam() -> bool:
    """If STORAGE_EMULATOR_HOST is set, make Beam's GCS access anonymous
    (`anonymous_beam_gcs`) and return True; otherwise change nothing (Application
    Default Credentials apply, as on Dataflow)."""
    if not emulator_host():
        return False
    anonymous_beam_gcs()
    return True


@functools.lru_cache(maxsize=None)
def _gcs_fs(host: str | None) -> pafs.FileSystem:
    if host:
        scheme = "https" if host.startswith("https://") else "http"
        endpoint = host.split("://", 1)[-1]
        return pafs.GcsFileSystem(anonymous=True, endpoint_override=endpoint, scheme=scheme,
                                  retry_time_limit=__import__("datetime").timedelta(seconds=10))
    return pafs.GcsFileSystem()


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """(pyarrow filesystem, path inside it) for a local path or gs:// URI."""
    uri = str(uri)
    if is_gcs(uri):
        return _gcs_fs(emulator_host()), uri[5:]
    return pafs.LocalFileSystem(), os.path.abspath(uri)


@functools.lru_cache(maxsize=None)
def _gcs_client(host: str | None):
    from google.cloud import storage

    if host:
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(project=os.environ.get("GOOGLE_CLOUD_PROJECT", "test-project"),
                              credentials=AnonymousCredentials(),
                              client_options={"api_endpoint": host})
    return storage.Client()


def _blob(uri: str):
    bucket, _, name = uri[5:].partition("/")
    return _gcs_client(emulator_host()).bucket(bucket).blob(name)


# ------------------------------------------------------------------ reads ---
def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def is_file(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.get_file_info(path).type == pafs.FileType.File


def read_bytes(uri: str) -> bytes:
    fs, path = filesystem(uri)
    info = fs.get_file_info(path)
    if info.type != pafs.FileType.File:
        raise FileNotFoundError(uri)
    with fs.open_input_stream(path) as f:
        return f.read()


def open_input(uri: str):
    """A random-access file (what pyarrow.parquet.ParquetFile wants)."""
    fs, path = filesystem(uri)
    return fs.open_input_file(path)


def list_files(prefix: str, suffix: str = "") -> list[str]:
    """Every file under `prefix` (recursively), sorted, as URIs of the same form."""
    fs, path = filesystem(prefix)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        return []
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    files = sorted(i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(suffix))
    return [("gs://" + p) if is_gcs(prefix) else p for p in files]


def list_dirs(uri: str) -> list[str]:
    """Names of the immediate sub-folders of `uri`, sorted."""
    if is_gcs(uri):
        # pyarrow lists only folders that have "name/" marker objects; objects
        # written by other clients (Beam, google-cloud-storage) have none.
        bucket, _, name = str(uri)[5:].partition("/")
        name = name.strip("/")
        blobs = _gcs_client(emulator_host()).list_blobs(
            bucket, prefix=f"{name}/" if name else None, delimiter="/")
        for _ in blobs.pages:  # prefixes fill in as the pages are read
            pass
        return sorted(posixpath.basename(p.rstrip("/")) for p in blobs.prefixes)
    fs, path = filesystem(uri)
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return []
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=False))
    return sorted(posixpath.basename(i.path.rstrip("/")) for i in infos
                  if i.type == pafs.FileType.Directory)


def size(uri: str) -> int:
    fs, path = filesystem(uri)
    return fs.get_file_info(path).size


# ----------------------------------------------------------------- writes ---
def open_output(uri: str):
    fs, path = filesystem(uri)
    if not is_gcs(uri):
        fs.create_dir(posixpath.dirname(path), recursive=True)
    return fs.open_output_stream(path)


def write_bytes(uri: str, data: bytes) -> None:
    """Write a whole file. Locally via a temporary file and a rename, so a reader
    never sees half of it; a GCS object appears whole on upload."""
    if is_gcs(uri):
        _blob(uri).upload_from_string(data)
        return
    os.makedirs(os.path.dirname(os.path.abspath(uri)), exist_ok=True)
    tmp = f"{uri}.tmp-{uuid.uuid4().hex}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, uri)


def create_only(uri: str, data: bytes) -> None:
    """Create `uri` with `data`, or raise AlreadyExists. Never overwrites."""
    if is_gcs(uri):
        from google.api_core.exceptions import PreconditionFailed

        blob = _blob(uri)
        if blob.exists():  # the precondition below is what makes it atomic on GCS
            raise AlreadyExists(uri)
        try:
            blob.upload_from_string(data, if_generation_match=0)
        except PreconditionFailed:
            raise AlreadyExists(uri) from None
        return
    os.makedirs(os.path.dirname(os.path.abspath(uri)), exist_ok=True)
    tmp = f"{uri}.tmp-{uuid.uuid4().hex}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(tmp, uri)  # atomic, and fails when the target exists
    except FileExistsError:
        raise AlreadyExists(uri) from None
    finally:
        os.unlink(tmp)


def delete_tree(uri: str) -> None:
    fs, path = filesystem(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.Directory:
        if is_gcs(uri) and "/" in path.strip("/"):
            # pyarrow's delete_dir also deletes the "dir/" marker object and fails
            # with NotFound when there is none (objects written by other clients).
            fs.delete_dir_contents(path, missing_dir_ok=True)
            marker = _blob("gs://" + path.rstrip("/") + "/")
            if marker.exists():
                marker.delete()
        else:
            fs.delete_dir(path)
    elif info.type == pafs.FileType.File:
        fs.delete_file(path)


def delete_file(uri: str) -> None:
    fs, path = filesystem(uri)
    if fs.get_file_info(path).type == pafs.FileType.File:
        fs.delete_file(path)


# ---------------------------------------------------------------- pointer ---
POINTER_READ_ATTEMPTS = 5


@dataclass(frozen=True)
class Pointer:
    content: str | None  # None: no pointer yet
    token: object  # what replace_pointer must see unchanged (GCS generation or local content)


def read_pointer(uri: str) -> Pointer:
    if is_gcs(uri):
        from google.api_core.exceptions import PreconditionFailed

        blob = _blob(uri)
        for _ in range(POINTER_READ_ATTEMPTS):
            try:
                blob.reload()
            except Exception as e:  # NotFound
                if type(e).__name__ == "NotFound":
                    return Pointer(None, 0)
                raise
            # Keep the generation read here: a download overwrites blob.generation with
            # its response header (absent on some emulators, which would then give None
            # and an unconditional replace).
            generation = blob.generation
            try:
                data = blob.download_as_bytes(if_generation_match=generation)
            except PreconditionFailed:
                continue  # another writer replaced it between the two requests: read again
            return Pointer(data.decode().strip(), generation)
        raise PointerMoved(f"{uri} kept changing while being read ({POINTER_READ_ATTEMPTS} attempts)")
    try:
        with open(uri, "rb") as f:
            content = f.read().decode().strip()
    except FileNotFoundError:
        return Pointer(None, None)
    return Pointer(content, content)


def replace_pointer(uri: str, content: str, expected: Pointer, lock_timeout_s: float = 30.0) -> None:
    """Set the pointer to `content` if it still is what `expected` read, else raise
    PointerMoved. On GCS the generation precondition makes it atomic; locally an
    exclusive lock (`local_lock`) serialises writers and the swap is a rename."""
    data = (content + "\n").encode()
    if is_gcs(uri):
        from google.api_core.exceptions import PreconditionFailed

        try:
            _blob(uri).upload_from_string(data, if_generation_match=expected.token)
        except PreconditionFailed:
            raise PointerMoved(uri) from None
        return
    os.makedirs(os.path.dirname(os.path.abspath(uri)), exist_ok=True)
    with local_lock(uri + ".lock", lock_timeout_s):
        current = read_pointer(uri)
        if current.content != expected.content:
            raise PointerMoved(f"{uri} now points to {current.content}, expected {expected.content}")
        write_bytes(uri, data)


class local_lock:
    """An exclusive lock on a local lock file: `flock(LOCK_EX)` on `path`.

    The kernel drops the lock when its holder dies, so a process killed inside
    the critical section (SIGKILL, OOM, power loss) never blocks the next run;
    there is no staleness guess and no race between two processes breaking a
    stale lock. The lock file itself stays (it is empty and harmless).
    `stale_s` is accepted for compatibility and unused."""

    def __init__(self, path: str, timeout_s: float = 30.0, stale_s: float | None = None):
        self.path, self.timeout_s = path, timeout_s
        self.fd: int | None = None

    def __enter__(self):
        import fcntl

        deadline = time.monotonic() + self.timeout_s
        os.makedirs(os.path.dirname(os.path.abspath(self.path)) or ".", exist_ok=True)
        fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self.fd = fd
                return self
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise TimeoutError(f"could not take lock {self.path} within {self.timeout_s:.0f} s") from None
                time.sleep(0.02)

    def __exit__(self, *exc):
        import fcntl

        fd, self.fd = self.fd, None
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)


# ------------------------------------------------------------ fingerprint ---
def fingerprint(uri: str) -> str:
    """A content fingerprint of one file: sha256 of its bytes locally; on GCS the
    server-computed crc32c and md5 (no download)."""
    if is_gcs(uri):
        blob = _blob(uri)
        blob.reload()
        return f"gcs:crc32c={blob.crc32c},md5={blob.md5_hash},size={blob.size}"
    import hashlib

    h = hashlib.sha256()
    with open(uri, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()
