"""One storage layer for the whole job: local folders and gs:// URIs.

Data goes through `pyarrow.fs` (random access for Parquet, streaming writes).
The two operations that need stronger guarantees than a plain write use the
backend's own primitive:

* `create_only(uri, data)`: exclusive create. Locally `open(..., "xb")` on a
  temporary name plus `os.link` (fails if the target exists); on GCS an upload
  with `if_generation_match=0`.
* `replace_pointer(uri, data, expected)`: compare-and-swap of a small pointer
  file. Locally an exclusive lock (`pipelines.locks.local_lock`: flock on a
  lock file, released by the kernel if its holder is killed) around
  read-compare-rename; on GCS an upload with `if_generation_match=<generation read>`.

Local writes that the machine refuses (disk full, read-only, permission) raise
`StorageError` naming the path, never a bare OSError from deep inside a
library; a failed whole-file write leaves no temporary file behind.

`STORAGE_EMULATOR_HOST` is honoured (anonymous access to the emulator);
otherwise Application Default Credentials apply.
"""
from __future__ import annotations

import functools
import logging
import os
import posixpath
import shutil
import time
import uuid
from dataclasses import dataclass

import pyarrow.fs as pafs

from pipelines.errors import StorageError, resource_error, translated  # noqa: F401 - re-exported
from pipelines.locks import LockTimeout, local_lock, lock_holder  # noqa: F401 - part of this module's API

log = logging.getLogger(__name__)


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
    """Every file under `prefix` (recursively), sorted, as URIs of the same form.

    Locally a symlinked folder below `prefix` is not followed (it is logged and
    skipped): a link back to a parent would otherwise make the walk read the
    same files again and again. `prefix` itself may be a link."""
    if not is_gcs(prefix):
        return _local_files(prefix, suffix)
    fs, path = filesystem(prefix)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        return []
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    files = sorted(i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(suffix))
    return ["gs://" + p for p in files]


def _local_files(prefix: str, suffix: str) -> list[str]:
    root = os.path.abspath(prefix)
    if os.path.isfile(root):
        return [root] if root.endswith(suffix) else []
    found = []
    for folder, dirs, files in os.walk(root, followlinks=False, onerror=None):
        for d in dirs:
            if os.path.islink(os.path.join(folder, d)):
                log.warning("not following the symlinked folder %s (under %s)", os.path.join(folder, d), root)
        found += [os.path.join(folder, f) for f in files
                  if f.endswith(suffix) and os.path.isfile(os.path.join(folder, f))]
    return sorted(found)


def require_folder(uri: str, what: str = "folder") -> None:
    """Raise StorageError when `uri` exists but is not a folder (a local file
    given where a folder belongs)."""
    if not is_gcs(uri) and os.path.exists(uri) and not os.path.isdir(uri):
        raise StorageError(f"{what} {uri} is a file, not a folder")


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
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        return []
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=False))
    return sorted(posixpath.basename(i.path.rstrip("/")) for i in infos
                  if i.type == pafs.FileType.Directory)


def size(uri: str) -> int:
    fs, path = filesystem(uri)
    return fs.get_file_info(path).size


# ----------------------------------------------------------------- writes ---
def make_private_dirs(path: str) -> None:
    """Create a local folder (and its parents) readable by the owner only
    (0700); an existing folder is narrowed to 0700 too."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)


class open_output:
    """`with open_output(uri) as f:` a writable stream (pyarrow) on a local path
    or gs:// object. Disk-full, read-only and permission errors, from the body
    or the close, come out as one StorageError naming the file.

    private: locally, the file is created 0600 in a 0700 folder (dead letters
    and scratch files hold raw rows with user ids). On GCS access is the
    bucket's IAM."""

    def __init__(self, uri: str, private: bool = False):
        self.uri, self.private = str(uri), private
        self.stream = None

    def __enter__(self):
        fs, path = filesystem(self.uri)
        with translated(self.uri):
            if not is_gcs(self.uri):
                if self.private:
                    make_private_dirs(os.path.dirname(path))
                    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
                    os.chmod(path, 0o600)
                else:
                    fs.create_dir(posixpath.dirname(path), recursive=True)
            self.stream = fs.open_output_stream(path)
        return self.stream

    def __exit__(self, exc_type, exc, tb):
        try:
            with translated(self.uri):
                self.stream.close()
        except OSError:
            if exc is None:
                raise
            log.debug("closing %s after an error failed too", self.uri, exc_info=True)
        if isinstance(exc, OSError):
            err = resource_error(exc, self.uri)
            if err is not None and err is not exc:
                raise err from exc
        return False


def write_bytes(uri: str, data: bytes) -> None:
    """Write a whole file. Locally via a temporary file and a rename, so a reader
    never sees half of it (the temporary file is removed when the write fails,
    e.g. on a full disk); a GCS object appears whole on upload."""
    if is_gcs(uri):
        _blob(uri).upload_from_string(data)
        return
    with translated(uri):
        tmp = _written_beside(uri, data)
        try:
            os.replace(tmp, uri)
        except BaseException:
            _unlink_quietly(tmp)
            raise


def _written_beside(uri: str, data: bytes) -> str:
    """`data` in a fresh temporary file next to the local path `uri`, on disk
    (fsync); its name. Nothing is left behind when the write fails."""
    os.makedirs(os.path.dirname(os.path.abspath(uri)), exist_ok=True)
    tmp = f"{uri}.tmp-{uuid.uuid4().hex}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        _unlink_quietly(tmp)
        raise
    return tmp


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


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
    with translated(uri):
        tmp = _written_beside(uri, data)
        try:
            os.link(tmp, uri)  # atomic, and fails when the target exists
        except FileExistsError:
            raise AlreadyExists(uri) from None
        finally:
            _unlink_quietly(tmp)


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
MAX_POINTER_BYTES = 4096  # a pointer holds one short path; anything longer is damage
POINTER_READ_ATTEMPTS = 5


@dataclass(frozen=True)
class Pointer:
    content: str | None  # None: no pointer yet; else its text (undecodable bytes escaped, so never an exception)
    token: object  # what replace_pointer must see unchanged (GCS generation, or the local file's bytes)


def _pointer_text(data: bytes) -> str:
    return data[:MAX_POINTER_BYTES].decode("utf-8", "backslashreplace").strip()


def read_pointer(uri: str) -> Pointer:
    """The pointer at `uri`, whatever its bytes (a reader decides whether the
    text names anything). StorageError when `uri` is a folder or unreadable."""
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
            return Pointer(_pointer_text(data), generation)
        raise PointerMoved(f"{uri} kept changing while being read ({POINTER_READ_ATTEMPTS} attempts)")
    try:
        with open(uri, "rb") as f:
            data = f.read(MAX_POINTER_BYTES + 1)
    except (FileNotFoundError, NotADirectoryError):
        return Pointer(None, None)
    except IsADirectoryError:
        raise StorageError(f"{uri} is a folder, not a pointer file "
                           "(`oasis snapshots repair` sets it aside and writes the pointer)") from None
    except OSError as e:
        raise StorageError(f"{uri} cannot be read: {e.strerror or e}") from None
    return Pointer(_pointer_text(data), data)


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
    with translated(uri):
        os.makedirs(os.path.dirname(os.path.abspath(uri)), exist_ok=True)
    with local_lock(uri + ".lock", lock_timeout_s):
        current = read_pointer(uri)
        if current.token != expected.token:
            raise PointerMoved(f"{uri} now points to {current.content}, expected {expected.content}")
        write_bytes(uri, data)


def set_aside(uri: str, why: str) -> str | None:
    """Rename a damaged local file or folder out of the way (`<uri>.<why>-<time>`),
    keeping it for whoever looks into it; returns the new name (None on GCS,
    where an object is simply overwritten)."""
    if is_gcs(uri) or not os.path.lexists(uri):
        return None
    aside = f"{uri}.{why}-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    with translated(uri):
        os.replace(uri, aside)
    return aside


def free_bytes(uri: str) -> int | None:
    """Free bytes on the filesystem of a local path (its nearest existing
    parent); None for gs://."""
    if is_gcs(uri):
        return None
    path = os.path.abspath(uri)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return shutil.disk_usage(path).free


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
