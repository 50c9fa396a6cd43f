"""pipelines.storage against the real GCS emulator (gcp-storage-emulator).

The emulator does not enforce generation preconditions, so no test here expects
a 412 from it; `test_preconditions_are_sent` checks instead that the code sends
them (with the generation the emulator really reported).
"""
from __future__ import annotations

import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import storage

pytestmark = pytest.mark.emulator


def test_write_read_exists_list(gcs_env):
    root = gcs_env.root
    storage.write_bytes(f"{root}/a/x.txt", b"hello")
    storage.write_bytes(f"{root}/a/b/y.parquet", b"y")
    storage.write_bytes(f"{root}/a/c/d/z.parquet", b"zz")
    storage.write_bytes(f"{root}/ab/other.txt", b"o")  # shares the prefix "a"

    assert storage.read_bytes(f"{root}/a/x.txt") == b"hello"
    assert storage.exists(f"{root}/a/x.txt") and storage.is_file(f"{root}/a/x.txt")
    assert storage.exists(f"{root}/a/b")  # a folder is a prefix
    assert not storage.is_file(f"{root}/a/b")
    assert not storage.exists(f"{root}/a/nope")
    assert storage.size(f"{root}/a/c/d/z.parquet") == 2
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(f"{root}/a/nope")
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(f"{root}/a/b")

    assert storage.list_files(f"{root}/a") == [
        f"{root}/a/b/y.parquet", f"{root}/a/c/d/z.parquet", f"{root}/a/x.txt"]
    assert storage.list_files(f"{root}/a", suffix=".parquet") == [
        f"{root}/a/b/y.parquet", f"{root}/a/c/d/z.parquet"]
    assert storage.list_files(f"{root}/missing") == []
    # folders exist only as prefixes here (no marker objects)
    assert storage.list_dirs(f"{root}/a") == ["b", "c"]
    assert storage.list_dirs(f"{root}/a/") == ["b", "c"]
    assert storage.list_dirs(root) == ["a", "ab"]
    assert storage.list_dirs(f"{root}/missing") == []

    # overwrite replaces the whole object
    storage.write_bytes(f"{root}/a/x.txt", b"bye")
    assert storage.read_bytes(f"{root}/a/x.txt") == b"bye"
    # and it really is in the emulator's bucket
    names = sorted(b.name for b in gcs_env.client().list_blobs(gcs_env.bucket))
    assert names == ["a/b/y.parquet", "a/c/d/z.parquet", "a/x.txt", "ab/other.txt"]


def test_parquet_through_open_output_and_open_input(gcs_env):
    uri = storage.join(gcs_env.root, "snapshots", "score_date=2024-05-02", "s1", "t", "part-0.parquet")
    table = pa.table({"track_id": ["t1", "t2", "t3"], "plays": pa.array([3, 0, 7], pa.int64()),
                      "score": [0.5, 0.0, 1.0]})
    with storage.open_output(uri) as f:
        pq.write_table(table, f)
    assert storage.is_file(uri)
    pf = pq.ParquetFile(storage.open_input(uri))
    assert pf.metadata.num_rows == 3
    assert pf.read().equals(table)
    # and via the pyarrow filesystem the storage layer hands out
    fs, path = storage.filesystem(uri)
    assert pq.read_table(path, filesystem=fs).equals(table)
    assert storage.list_dirs(storage.join(gcs_env.root, "snapshots")) == ["score_date=2024-05-02"]


def test_delete_tree(gcs_env):
    root = gcs_env.root
    for name in ("t/a/1", "t/a/2", "t/a/sub/3", "t/ab/keep", "t/file", "t/keep"):
        storage.write_bytes(f"{root}/{name}", b"x")
    storage.delete_tree(f"{root}/t/a")  # a folder without marker objects
    assert not storage.exists(f"{root}/t/a")
    storage.delete_tree(f"{root}/t/file")  # a single object
    assert not storage.exists(f"{root}/t/file")
    storage.delete_tree(f"{root}/t/never-there")  # no-op
    assert storage.list_files(f"{root}/t") == [f"{root}/t/ab/keep", f"{root}/t/keep"]
    assert [b.name for b in gcs_env.client().list_blobs(gcs_env.bucket)] == ["t/ab/keep", "t/keep"]
    # (Folders with "name/" marker objects, as pyarrow's create_dir makes them,
    # cannot be tested here: the file-backed emulator stores the marker as a
    # file and then drops the connection on any write below it.)


def test_create_only(gcs_env):
    uri = f"{gcs_env.root}/snapshots/score_date=2024-05-02/s1/_MANIFEST.json"
    storage.create_only(uri, b'{"v": 1}')
    with pytest.raises(storage.AlreadyExists):
        storage.create_only(uri, b'{"v": 2}')
    assert storage.read_bytes(uri) == b'{"v": 1}'


def test_pointer_round_trip(gcs_env):
    uri = f"{gcs_env.root}/snapshots/LATEST"
    p0 = storage.read_pointer(uri)
    assert p0.content is None and p0.token == 0

    storage.replace_pointer(uri, "score_date=2024-05-02/s1", p0)
    p1 = storage.read_pointer(uri)
    assert p1.content == "score_date=2024-05-02/s1"
    assert storage.read_bytes(uri) == b"score_date=2024-05-02/s1\n"
    assert isinstance(p1.token, int) and p1.token > 0
    assert p1.token == gcs_env.client().bucket(gcs_env.bucket).get_blob("snapshots/LATEST").generation

    storage.replace_pointer(uri, "score_date=2024-05-03/s2", p1)
    p2 = storage.read_pointer(uri)
    assert p2.content == "score_date=2024-05-03/s2"
    assert p2.token != p1.token  # each write is a new generation


def test_preconditions_are_sent(gcs_env, monkeypatch):
    """The only call inspection: the uploads that must be atomic carry the
    generation precondition (the emulator accepts but ignores it)."""
    from google.cloud.storage import Blob

    calls = []
    original = Blob.upload_from_string

    def spy(self, data, *args, **kwargs):
        calls.append((self.name, kwargs.get("if_generation_match")))
        return original(self, data, *args, **kwargs)

    monkeypatch.setattr(Blob, "upload_from_string", spy)

    storage.create_only(f"{gcs_env.root}/once", b"1")
    assert calls[-1] == ("once", 0)

    uri = f"{gcs_env.root}/LATEST"
    storage.replace_pointer(uri, "a", storage.read_pointer(uri))
    assert calls[-1] == ("LATEST", 0)  # no pointer yet: create only
    read = storage.read_pointer(uri)
    real_generation = gcs_env.client().bucket(gcs_env.bucket).get_blob("LATEST").generation
    storage.replace_pointer(uri, "b", read)
    assert calls[-1] == ("LATEST", real_generation)
    assert storage.read_pointer(uri).content == "b"


def test_fingerprint(gcs_env):
    a, b, c = (f"{gcs_env.root}/f/{n}" for n in "abc")
    storage.write_bytes(a, b"same bytes")
    storage.write_bytes(b, b"same bytes")
    storage.write_bytes(c, b"other bytes")
    assert storage.fingerprint(a) == storage.fingerprint(b)
    assert storage.fingerprint(a) != storage.fingerprint(c)
    assert "None" not in storage.fingerprint(a)


def test_beam_reads_and_writes_gcs_without_credentials_probe(gcs_env):
    """The fixture makes Beam connect anonymously at once (otherwise ~25 s of
    retried default-credentials lookups before the first gs:// access)."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    out = f"{gcs_env.root}/beam/out"
    start = time.monotonic()
    with beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"])) as p:
        _ = p | beam.Create(["a", "b", "c"]) | beam.io.WriteToText(out, shard_name_template="-SS")
    with beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"])) as p:
        lines = p | beam.io.ReadFromText(f"{out}*")
        counted = lines | beam.combiners.Count.Globally()
        _ = counted | beam.Map(lambda n: None if n == 3 else (_ for _ in ()).throw(AssertionError(n)))
    elapsed = time.monotonic() - start
    assert storage.list_files(f"{gcs_env.root}/beam") == [f"{out}-00"]
    assert sorted(storage.read_bytes(f"{out}-00").decode().split()) == ["a", "b", "c"]
    assert elapsed < 15, f"Beam spent {elapsed:.1f} s: probing for default credentials?"
