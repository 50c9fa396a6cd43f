"""Ready for Dataflow, checked offline:

* `setup.py` (what `--setup_file ./setup.py` ships to the workers) packages
  every module of schemas/, pipelines/ and jobs/, and what it installs imports
  on its own;
* the daily pipeline translates into a Dataflow job (DataflowRunner with
  `--dry_run`: everything up to the submission, nothing sent);
* the pipeline runs on another runner (PortableRunner, embedded job server,
  LOOPBACK workers) and gives the same content fingerprints as the DirectRunner.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from tests.support import worlds

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("schemas", "pipelines", "jobs")
DAY = worlds.END
DATAFLOW_OPTIONS = [
    "--runner=DataflowRunner", "--project=oasis-prod-1", "--region=europe-west1",
    "--temp_location=gs://oasis-dataflow-test/tmp", "--staging_location=gs://oasis-dataflow-test/staging",
    "--service_account_email=oasis-runner@oasis-prod-1.iam.gserviceaccount.com",
    "--setup_file=./setup.py", "--labels=app=oasis",
]


def repo_modules() -> set[str]:
    """Every module file of the shipped packages, relative to the repo root."""
    return {p.relative_to(ROOT).as_posix() for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")
            if "__pycache__" not in p.parts}


def package_data_files() -> set[str]:
    """Non-Python files inside the packages (setup.py's package_data must cover them)."""
    return {p.relative_to(ROOT).as_posix() for pkg in PACKAGES for p in (ROOT / pkg).rglob("*")
            if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts}


def sdist_members(path: Path) -> set[str]:
    """Files in an sdist, relative to its top folder."""
    with tarfile.open(path) as tar:
        return {m.name.split("/", 1)[1] for m in tar.getmembers() if m.isfile() and "/" in m.name}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A copy of the project to build from (building writes an egg-info next to
    setup.py; the working tree is left alone)."""
    dst = tmp_path_factory.mktemp("project") / "oasis"
    shutil.copytree(ROOT, dst, ignore=shutil.ignore_patterns(
        ".git", ".venv", ".emulators", "data", "test-artifacts", "*.egg-info", "__pycache__",
        ".pytest_cache", ".hypothesis", "build", "dist", "*.duckdb"))
    return dst


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> str:
    return worlds.make_world(str(tmp_path_factory.mktemp("df-world")), days=4, tracks=60,
                             events_per_day=3000, markets=2)


def test_setup_py_ships_every_module_and_it_imports_on_its_own(project, tmp_path):
    # the sdist, built the way Beam's stager builds it for --setup_file
    subprocess.run([sys.executable, "setup.py", "-q", "sdist", "--dist-dir", str(tmp_path / "dist")],
                   cwd=project, check=True, capture_output=True, timeout=120)
    (sdist,) = (tmp_path / "dist").glob("oasis-scores-*.tar.gz")
    members = sdist_members(sdist)
    missing = (repo_modules() | package_data_files()) - members
    assert not missing, f"setup.py does not ship {sorted(missing)}"

    # what a worker installs from it: build the sdist's packages on their own
    with tarfile.open(sdist) as tar:
        tar.extractall(tmp_path / "src", filter="data")
    (src,) = (tmp_path / "src").iterdir()
    lib = tmp_path / "lib"
    subprocess.run([sys.executable, "setup.py", "-q", "build", "--build-lib", str(lib)], cwd=src, check=True,
                   capture_output=True, timeout=120)
    built = {p.relative_to(lib).as_posix() for p in lib.rglob("*") if p.is_file()}
    assert (repo_modules() | package_data_files()) <= built

    # every module imports from the built copy alone (nothing reaches back into the repo)
    modules = sorted(m[:-3].replace("/", ".").removesuffix(".__init__") for m in repo_modules())
    code = ("import importlib, json, sys\n"
            f"mods = {modules!r}\n"
            "print(json.dumps({m: importlib.import_module(m).__file__ for m in mods}))\n")
    env = {**os.environ, "PYTHONPATH": str(lib)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = json.loads(proc.stdout.strip().splitlines()[-1])
    assert all(f.startswith(str(lib)) for f in files.values()), files


def test_the_pipeline_translates_to_a_dataflow_job_without_submitting(project, world, tmp_path, monkeypatch):
    import apache_beam as beam
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions
    from apache_beam.portability.api import beam_runner_api_pb2
    from apache_beam.runners.dataflow.internal import apiclient

    from jobs.cli import main as cli
    from jobs.run.options import RunOptions
    from jobs.run.plan import make_plan
    from pipelines.beam import pipeline as daily
    from pipelines.config import Config

    monkeypatch.chdir(project)  # --setup_file=./setup.py, as the README runs it
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where Beam builds what it would stage
    # the Beam options reach Beam through `oasis run` unchanged
    args, beam_args = cli.parser().parse_known_args(
        ["run", "--date", DAY.isoformat(), "--input", world, "--output", str(tmp_path / "out"),
         "--warehouse", "bq://oasis-prod-1.oasis", *DATAFLOW_OPTIONS])
    assert args.command == "run" and beam_args == DATAFLOW_OPTIONS
    plan, _ = make_plan(DAY, world, str(tmp_path / "out"), Config.load(None), RunOptions())
    options = PipelineOptions([*beam_args, "--dry_run=True"])
    p = beam.Pipeline(options=options)
    daily.build(p, plan)
    t0 = time.monotonic()
    result = p.run()  # overrides, proto translation, sdist of setup.py, Job; no request is sent
    job = result.job
    seconds = time.monotonic() - t0

    # the job: a batch job with our label, options as given
    assert job.proto.type_ == apiclient.dataflow.JobType.JOB_TYPE_BATCH
    assert dict(job.proto.labels) == {"app": "oasis"}
    gcp = job.options.view_as(GoogleCloudOptions)
    assert (gcp.project, gcp.region) == ("oasis-prod-1", "europe-west1")
    assert gcp.staging_location.startswith("gs://oasis-dataflow-test/staging/" + job.proto.name)

    # every step of the daily pipeline is in the graph Dataflow would run
    transforms = job.proto_pipeline.components.transforms
    top = {t.unique_name for t in transforms.values() if "/" not in t.unique_name}
    days = [bd.day.isoformat() for bd in plan.build_days]
    assert len(days) == 4
    expected = {"ReadEnrollments", "CheckEnrollments", "LatestEnrollments", "ReadStoredAggregates",
                "ReadStoredTotals", "FlattenAggregates", "FlattenTotals", "ScoreMarkets",
                "Write[promotion_scores]", "Write[campaign_delivery]", "Write[capacity]", "WriteDeadLetters"}
    for d in days:
        expected |= {f"ReadEngagement[{d}]", f"CheckEngagement[{d}]", f"AggregateDailySignals[{d}]",
                     f"WriteAggregates[{d}]", f"WriteTotals[{d}]"}
    assert expected <= top, sorted(expected - top)

    # one Docker environment (the Dataflow Python image of this Beam) that
    # installs our package, the sdist Beam built from setup.py
    envs = job.proto_pipeline.components.environments
    used = {t.environment_id for t in transforms.values() if t.environment_id}
    assert len(used) == 1
    (env,) = [envs[e] for e in used]
    image = beam_runner_api_pb2.DockerPayload.FromString(env.payload).container_image
    assert image == apiclient.get_container_image_from_options(job.options)
    assert f"python{sys.version_info.major}.{sys.version_info.minor}" in image and beam.__version__ in image
    staged = {}
    for dep in env.dependencies:
        path = beam_runner_api_pb2.ArtifactFilePayload.FromString(dep.type_payload).path
        name = beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(dep.role_payload).staged_name
        staged[name] = path
    assert "workflow.tar.gz" in staged
    assert repo_modules() <= sdist_members(Path(staged["workflow.tar.gz"]))

    # the Dataflow environment the service would get (what create_job adds
    # before its request, built here without staging anything)
    job.proto.environment = apiclient.Environment(
        packages=sorted(staged), options=job.options,
        environment_version=apiclient._FNAPI_ENVIRONMENT_MAJOR_VERSION,
        proto_pipeline_staged_url=FileSystems.join(gcp.staging_location, "pipeline.pb"),
        proto_pipeline=job.proto_pipeline).proto
    doc = json.loads(job.json())
    environment = doc["environment"]
    assert environment["serviceAccountEmail"] == "oasis-runner@oasis-prod-1.iam.gserviceaccount.com"
    assert environment["tempStoragePrefix"].startswith("storage.googleapis.com/oasis-dataflow-test/tmp/")
    (pool,) = environment["workerPools"]
    assert pool["workerHarnessContainerImage"] == image
    assert any(pkg["name"] == "workflow.tar.gz" and pkg["location"].startswith(
        "storage.googleapis.com/oasis-dataflow-test/staging/") for pkg in pool["packages"])
    sdk_options = environment["sdkPipelineOptions"]["options"]
    assert sdk_options["setup_file"] == "./setup.py" and sdk_options["region"] == "europe-west1"
    assert sdk_options["project"] == "oasis-prod-1"
    print(f"\n[dataflow dry run: {seconds:.1f} s, {len(transforms)} transforms]", file=sys.stderr)


def _oasis_run(*args: str) -> tuple[int, str]:
    from jobs.cli import main as cli

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.main(["run", *args])
    return code, err.getvalue()


def _manifest(out: Path) -> dict:
    (m,) = out.glob("snapshots/score_date=*/*/_MANIFEST.json")
    return json.loads(m.read_text())


def test_portable_runner_gives_the_same_snapshot_as_the_direct_runner(world, tmp_path):
    """The pipeline does not depend on the DirectRunner: on PortableRunner
    (embedded job server, LOOPBACK workers) the same date gives the same content
    fingerprints and the same counters (the bad-row ceiling depends on them)."""
    seconds = {}
    for runner, beam_args in (("direct", []), ("portable", ["--runner=PortableRunner", "--job_endpoint=embed",
                                                            "--environment_type=LOOPBACK"])):
        t0 = time.monotonic()
        code, err = _oasis_run("--date", DAY.isoformat(), "--input", world, "--output", str(tmp_path / runner),
                               *beam_args)
        seconds[runner] = round(time.monotonic() - t0, 1)
        assert code == 0, err[-3000:]
    direct, portable = _manifest(tmp_path / "direct"), _manifest(tmp_path / "portable")
    assert portable["beam_options"][0] == "--runner=PortableRunner"
    for name, t in direct["tables"].items():
        assert t["rows"] > 0 or name == "campaign_lift"  # no flight has 10 days in the logs of this world
        assert (portable["tables"][name]["rows"], portable["tables"][name]["content_sha256"]) == (
            t["rows"], t["content_sha256"]), name
    assert portable["metrics"] == direct["metrics"] and direct["metrics"]["dead_lettered/engagement/" + DAY.isoformat()] > 0
    print(f"\n[direct vs portable runner, seconds: {seconds}]", file=sys.stderr)
