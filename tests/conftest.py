"""Shared fixtures. The emulator fixtures start the real GCS and BigQuery
emulators once per session (see `tests/emulators.py`); tests that use them are
marked `emulator`. A missing emulator fails the test with the fix (`make
emulators`): it is never skipped.

Fixtures:

* `gcs_emulator` (session): `Emulator` with `.url`, `.data_dir` (its `-d`
  folder) and `.storage_root` (= data_dir/.cloudstorage, where the objects
  are stored).
* `bigquery_emulator` (session): `Emulator` with `.url` and `.project`
  ("test-project"); its gs:// loads read the GCS emulator's storage root.
* `gcs_env` (function): sets STORAGE_EMULATOR_HOST and GOOGLE_CLOUD_PROJECT,
  makes Beam's GCS filesystem anonymous (no 25 s credentials probe), creates a
  fresh bucket; yields `GcsEnv(url, bucket, root="gs://BUCKET", data_dir)`.
* `bq_env` (function): sets BIGQUERY_EMULATOR_HOST and GOOGLE_CLOUD_PROJECT,
  picks a fresh dataset name (not created); yields `BqEnv(url, project,
  dataset, uri="bq://PROJECT.DATASET")` with `.client()`. The dataset is
  deleted afterwards.

* `pushgateway` (session): a real Prometheus Pushgateway (Debian's
  `prometheus-pushgateway`, `tests/support/prometheus.py`); skipped with the
  reason where the package is not installed (`.ci/run` installs it).

All variables are set with monkeypatch and restored after each test.
"""
from __future__ import annotations

import fcntl
import json
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support import emulators, prometheus, worlds  # noqa: E402


# The modules whose shared worlds take minutes, slowest first: collected first, so that under
# pytest-xdist (`make test`: --dist loadfile) they start at once on different workers and the
# many short modules fill in behind them, instead of one of them starting last.
SLOWEST_MODULES = ("test_simulate.py", "test_docs_commands.py", "test_crash_safety.py", "test_backtest.py",
                   "test_yardstick_and_estimation.py", "test_long_window.py", "test_rollback_crash.py")


def pytest_collection_modifyitems(config, items):
    def rank(item):
        name = item.nodeid.split("::")[0].rsplit("/", 1)[-1]
        return SLOWEST_MODULES.index(name) if name in SLOWEST_MODULES else len(SLOWEST_MODULES)
    items.sort(key=rank)   # stable: the order within a module and among the others is kept


def _start(start, *args, **kwargs):
    """Start an emulator; a missing or broken one FAILS the test (never skips)."""
    try:
        return start(*args, **kwargs)
    except emulators.EmulatorError as e:
        message = str(e)
    pytest.fail(message, pytrace=False)


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory):
    emu = _start(emulators.start_gcs, tmp_path_factory.mktemp("gcs-emulator"))
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture(scope="session")
def bigquery_emulator(tmp_path_factory, gcs_emulator):
    emu = _start(emulators.start_bigquery, tmp_path_factory.mktemp("bq-emulator"),
                 gcs_root=gcs_emulator.storage_root)
    try:
        yield emu
    finally:
        emu.stop()


@dataclass
class GcsEnv:
    url: str
    bucket: str
    root: str  # gs://BUCKET
    data_dir: Path  # where the emulator keeps the objects (DIR/.cloudstorage)

    def client(self):
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(project=emulators.PROJECT, credentials=AnonymousCredentials(),
                              client_options={"api_endpoint": self.url})


@dataclass
class BqEnv:
    url: str
    project: str
    dataset: str
    uri: str  # bq://PROJECT.DATASET

    def client(self):
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import bigquery

        return bigquery.Client(project=self.project, credentials=AnonymousCredentials(),
                               client_options=ClientOptions(api_endpoint=self.url))


@pytest.fixture
def gcs_env(gcs_emulator, monkeypatch):
    if not gcs_emulator.alive():
        pytest.fail(f"GCS emulator died; log:\n{gcs_emulator.log_tail()}", pytrace=False)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator.url)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", emulators.PROJECT)
    try:
        from apache_beam.internal.gcp import auth
    except ImportError:  # Beam not installed: nothing to short-circuit
        pass
    else:
        monkeypatch.setattr(auth._Credentials, "_credentials_init", True)
        monkeypatch.setattr(auth._Credentials, "_credentials", None)
    env = GcsEnv(gcs_emulator.url, f"oasis-test-{uuid.uuid4().hex[:12]}", "",
                 gcs_emulator.storage_root)
    env.root = f"gs://{env.bucket}"
    env.client().create_bucket(env.bucket)
    yield env


@pytest.fixture
def bq_env(bigquery_emulator, monkeypatch):
    if not bigquery_emulator.alive():
        pytest.fail(f"BigQuery emulator died; log:\n{bigquery_emulator.log_tail()}", pytrace=False)
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", bigquery_emulator.url)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", bigquery_emulator.project)
    dataset = f"oasis_test_{uuid.uuid4().hex[:12]}"
    env = BqEnv(bigquery_emulator.url, bigquery_emulator.project, dataset,
                f"bq://{bigquery_emulator.project}.{dataset}")
    yield env
    try:
        env.client().delete_dataset(f"{env.project}.{dataset}", delete_contents=True,
                                    not_found_ok=True)
    except Exception:  # cleanup only; the emulator is in-memory and goes away anyway
        pass


@pytest.fixture(scope="session")
def pushgateway(tmp_path_factory):
    try:
        gw = prometheus.start_pushgateway(tmp_path_factory.mktemp("pushgateway") / "pushgateway.log")
    except prometheus.Unavailable as e:
        pytest.skip(str(e))
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)
    try:
        yield gw
    finally:
        gw.stop()


# ------------------------------------------------------------ long world ---
@dataclass
class LongWorld:
    """A world longer than the 28-day window and the 31-day pacing look-back,
    published for its last day. See tests/support/worlds.py (LONG_*)."""
    world: str
    out: str
    snapshot: str  # the published snapshot's folder


@pytest.fixture(scope="session")
def long_world(tmp_path_factory, request) -> LongWorld:
    """Built and run once per test run for every module that needs window or
    look-back boundaries, or just a published snapshot of a realistic month
    (read only). Under pytest-xdist the workers share it: the first to need it
    builds it in the run's common temporary folder under a file lock, the
    others wait and read it."""
    root = tmp_path_factory.getbasetemp()
    if hasattr(request.config, "workerinput"):   # an xdist worker: its basetemp is popen-gwN/ in the run's folder
        root = root.parent
    built = root / "long-world.json"
    with open(root / "long-world.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not built.exists():
            folder = root / "long-world"
            folder.mkdir()
            built.write_text(json.dumps(worlds.make_long_world(str(folder))))
        return LongWorld(*json.loads(built.read_text()))
