"""The single-writer logic on gs://, where the publish lock does nothing and
LATEST's compare-and-swap and create-only rest on GCS generation preconditions.

The GCS emulator accepts `if_generation_match` but ignores it, so a test
against it alone would pass whatever the code sends. `strict_gcs` wraps the
storage client's uploads and downloads (in this process, test-side only) to do
what real GCS does: a precondition that does not match the object's current
generation, read from the emulator, fails with 412 PreconditionFailed, the check
and the write atomic with respect to the other writers of this process. On top of
it, the races are played deterministically (another writer acts between a read
and the write that depends on it) and then for real with threads.

Each test names the broken build it catches: an upload without the
precondition, with the wrong generation, or a move of LATEST that does not
re-read after losing the race.
"""
from __future__ import annotations

import datetime as dt
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from jobs import layout
from jobs.snapshots import store
from pipelines import storage

pytestmark = pytest.mark.emulator

D = dt.date(2026, 11, 20)


class StrictGcs:
    """Generation preconditions enforced on the emulator, plus a hook to let
    another writer act right before a given object's next precondition check."""

    def __init__(self, monkeypatch):
        from google.api_core.exceptions import PreconditionFailed
        from google.cloud.storage import Blob

        self.lock = threading.RLock()
        self.hooks: dict[str, list] = {}
        self.checked = 0
        upload, download = Blob.upload_from_string, Blob.download_as_bytes
        strict = self

        def current_generation(blob) -> int:
            found = blob.bucket.get_blob(blob.name)
            return int(found.generation) if found is not None else 0

        def check(blob, expected, kind):
            hook = strict.hooks.get((kind, blob.name))
            if hook:
                hook.pop(0)()  # the other writer's move, right before this request
            if expected is None:
                return
            strict.checked += 1
            now = current_generation(blob)
            if now != int(expected):
                raise PreconditionFailed(f"412 {blob.name}: generation {now}, precondition {expected}")

        def strict_upload(blob, data, *args, if_generation_match=None, **kwargs):
            with strict.lock:
                check(blob, if_generation_match, "write")
                return upload(blob, data, *args, if_generation_match=if_generation_match, **kwargs)

        def strict_download(blob, *args, if_generation_match=None, **kwargs):
            with strict.lock:
                check(blob, if_generation_match, "read")
                return download(blob, *args, if_generation_match=if_generation_match, **kwargs)

        monkeypatch.setattr(Blob, "upload_from_string", strict_upload)
        monkeypatch.setattr(Blob, "download_as_bytes", strict_download)

    def before_next_write(self, name: str, action) -> None:
        self.hooks.setdefault(("write", name), []).append(action)

    def before_next_read(self, name: str, action) -> None:
        """`action` runs between read_pointer's metadata request and its download."""
        self.hooks.setdefault(("read", name), []).append(action)


@pytest.fixture
def strict_gcs(gcs_env, monkeypatch):
    return StrictGcs(monkeypatch)


def _generation(gcs_env, name: str) -> int:
    return gcs_env.client().bucket(gcs_env.bucket).get_blob(name).generation


def test_the_wrapper_enforces_what_real_gcs_does(gcs_env, strict_gcs):
    """Without this the tests below would prove nothing: a stale generation and a
    create over an existing object fail with 412; the current generation passes."""
    from google.api_core.exceptions import PreconditionFailed

    blob = storage._blob(f"{gcs_env.root}/x")
    blob.upload_from_string(b"1", if_generation_match=0)
    g1 = _generation(gcs_env, "x")
    with pytest.raises(PreconditionFailed):
        blob.upload_from_string(b"2", if_generation_match=0)
    with pytest.raises(PreconditionFailed):
        blob.upload_from_string(b"2", if_generation_match=g1 + 12345)
    blob.upload_from_string(b"2", if_generation_match=g1)
    assert storage.read_bytes(f"{gcs_env.root}/x") == b"2" and _generation(gcs_env, "x") != g1
    assert strict_gcs.checked == 4


def test_a_stale_pointer_swap_is_refused(gcs_env, strict_gcs):
    """Catches replace_pointer uploading without `if_generation_match` (or with a
    generation other than the one it read): the second writer's swap would
    silently overwrite the first's."""
    uri = f"{gcs_env.root}/snapshots/LATEST"
    storage.replace_pointer(uri, "score_date=2026-11-20/a", storage.read_pointer(uri))
    seen_by_a = storage.read_pointer(uri)
    seen_by_b = storage.read_pointer(uri)
    storage.replace_pointer(uri, "score_date=2026-11-21/b", seen_by_b)
    with pytest.raises(storage.PointerMoved):
        storage.replace_pointer(uri, "score_date=2026-11-21/a", seen_by_a)
    assert storage.read_pointer(uri).content == "score_date=2026-11-21/b"
    # a pointer that does not exist yet is created only once
    fresh = f"{gcs_env.root}/other/LATEST"
    nothing = storage.read_pointer(fresh)
    storage.replace_pointer(fresh, "score_date=2026-11-20/c", nothing)
    with pytest.raises(storage.PointerMoved):
        storage.replace_pointer(fresh, "score_date=2026-11-20/d", nothing)
    assert storage.read_pointer(fresh).content == "score_date=2026-11-20/c"


def test_move_latest_that_loses_the_race_rereads_and_never_moves_back(gcs_env, strict_gcs):
    """A backfill moving LATEST to D+1 reads it at D; before its write, a daily
    run moves it to D+2. The backfill's swap must fail, re-read, see a newer
    date and leave LATEST there. Catches a move that overwrites without the
    precondition, or gives up / retries without re-reading."""
    out = gcs_env.root
    assert store.move_latest(out, D, "s0")
    name = layout.latest_uri(out)[len(f"gs://{gcs_env.bucket}/"):]
    strict_gcs.before_next_write(name, lambda: store.move_latest(out, D + dt.timedelta(days=2), "daily"))
    assert store.move_latest(out, D + dt.timedelta(days=1), "backfill") is False
    assert store.latest_target(out) == (D + dt.timedelta(days=2), "daily")

    # losing to an older date: the re-read sees it, and the newer snapshot still wins
    strict_gcs.before_next_write(name, lambda: store.move_latest(out, D + dt.timedelta(days=2), "again",
                                                                 allow_older=True))
    assert store.move_latest(out, D + dt.timedelta(days=3), "next") is True
    assert store.latest_target(out) == (D + dt.timedelta(days=3), "next")


def test_a_pointer_replaced_while_being_read_is_read_again(gcs_env, strict_gcs):
    """read_pointer asks for the generation, then downloads that generation; a
    writer in between makes real GCS answer 412. The read must start again and
    return the new content with its generation (it used to raise
    PreconditionFailed out of move_latest, failing a run after its warehouse load)."""
    uri = f"{gcs_env.root}/snapshots/LATEST"
    storage.replace_pointer(uri, "score_date=2026-11-20/a", storage.read_pointer(uri))
    first = storage.read_pointer(uri)
    strict_gcs.before_next_read("snapshots/LATEST",
                                lambda: storage.replace_pointer(uri, "score_date=2026-11-21/b", first))
    now = storage.read_pointer(uri)
    assert now.content == "score_date=2026-11-21/b" and now.token == _generation(gcs_env, "snapshots/LATEST")
    # and a move of LATEST racing such a read still lands on the newest date
    out = gcs_env.root
    strict_gcs.before_next_read("snapshots/LATEST", lambda: store.move_latest(out, D + dt.timedelta(days=5), "x"))
    assert store.move_latest(out, D + dt.timedelta(days=4), "y") is False
    assert store.latest_target(out) == (D + dt.timedelta(days=5), "x")


def test_create_only_loses_cleanly_to_a_concurrent_creator(gcs_env, strict_gcs):
    """The exists() check passes, then another writer creates the object before
    the upload: only the precondition stops the overwrite. Catches create_only
    relying on exists() alone."""
    uri = f"{gcs_env.root}/snapshots/score_date=2026-11-21/s1/_MANIFEST.json"
    strict_gcs.before_next_write(uri[len(f"gs://{gcs_env.bucket}/"):],
                                 lambda: storage._blob(uri).upload_from_string(b"theirs"))
    with pytest.raises(storage.AlreadyExists):
        storage.create_only(uri, b"ours")
    assert storage.read_bytes(uri) == b"theirs"


def test_racing_writers_leave_latest_on_the_newest_date(gcs_env, strict_gcs):
    """Threads moving LATEST at once, each to its own date: whatever the
    interleaving, LATEST ends on the newest date, and every writer that said it
    moved LATEST was, at that moment, the newest so far."""
    out = gcs_env.root
    dates = [D + dt.timedelta(days=i) for i in (3, 1, 4, 0, 5, 2, 7, 6)]
    barrier = threading.Barrier(len(dates))

    def writer(i_date):
        i, day = i_date
        barrier.wait()
        return day, store.move_latest(out, day, f"w{i}", attempts=50)

    for _ in range(3):
        with ThreadPoolExecutor(len(dates)) as pool:
            results = list(pool.map(writer, enumerate(dates)))
        assert store.latest_target(out)[0] == max(dates)
        assert dict(results)[max(dates)] is True
    assert strict_gcs.checked >= len(dates)
