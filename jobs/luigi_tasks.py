"""Luigi tasks for the daily schedule and range backfills.

    luigi --module jobs.luigi_tasks DailyScores --date 2026-11-24 \\
        --input-root IN --output-root OUT --local-scheduler

    luigi --module jobs.luigi_tasks RangeDaily --of DailyScores \\
        --start 2026-11-01 --stop 2026-11-25 --days-back 400 --local-scheduler \\
        --DailyScores-input-root IN --DailyScores-output-root OUT

* `InputPartition(root, table, date)`: an input partition folder; exists when
  it holds at least one Parquet file.
* `DailyScores(date, input_root, output_root, config, warehouse, skip_gate)`: `date` is
  the last day of logs (as `oasis run --date`); it requires that day's
  enrollments and engagement partitions and publishes the snapshot of score
  date `date + 1` through `jobs.run.daily.run`, recorded like `oasis run`
  (`jobs.observe.hook.run_daily`: run record, metrics, lineage). `--skip-gate a,b`
  publishes past gates an engineer checked by hand, as `oasis run --skip-gate`.

  Complete when a published snapshot (a `_MANIFEST.json`, the file a publish
  writes last in the snapshot folder, only after validation passed) that no
  rollback pulled exists for score date `date + 1` under `output_root`. A date
  whose snapshots were all pulled is not complete, and running it publishes
  nothing while the inputs, config and code are the same (the run says why
  and the task fails) until someone republishes or changes them. It does not compare the run
  fingerprint: a date published once is done for the scheduler even if its
  inputs, config or code changed since; `oasis backfill` (which skips only
  identical runs) or `oasis run --force` republishes such dates.

* `ServingSync(date, ..., repo)`: after `DailyScores` of the same date, the
  snapshot LATEST points to into the Feast online store (`oasis serving sync`;
  the `serving` extra). Complete when the online store holds a snapshot of
  score date `date + 1` or later. For the daily schedule, not for backfills of
  old dates (a stale LATEST is refused unless `--allow-stale`).

`RangeDaily` checks a whole range with one listing of the snapshots
(`DailyScores.bulk_complete`). Its `--stop` is exclusive and its `--days-back`
defaults to 100: an older range is an "Empty range" that exits 0 having done
nothing. Luigi's command line exits 0 even when a task failed unless told
otherwise: add `--retcode-task-failed 1 --retcode-missing-data 1` (or a
`[retcode]` section in luigi.cfg) for a scheduler that must see failures.

Every file operation goes through `pipelines.storage`, so roots may be local
folders or gs:// URIs.
"""
from __future__ import annotations

import datetime as dt
import logging

import luigi
from luigi.util import inherits
from luigi.tools.range import RangeDaily  # noqa: F401 - registers RangeDaily for `luigi --module jobs.luigi_tasks`

from jobs import layout, logs
from jobs.feature_store import repository
from jobs.feature_store import sync as serving_sync
from jobs.observe.hook import run_daily
from jobs.run import daily
from jobs.run.options import RunOptions
from jobs.snapshots import pulls, store
from pipelines import storage


class StorageTarget(luigi.Target):
    """A file (local or gs://) that exists or not, read through `pipelines.storage`."""

    def __init__(self, uri: str):
        self.uri = uri
        self.path = uri  # what luigi's messages print

    def exists(self) -> bool:
        return storage.is_file(self.uri)


class PartitionTarget(luigi.Target):
    """An input partition folder: exists when it holds at least one Parquet file."""

    def __init__(self, uri: str):
        self.uri = uri
        self.path = uri

    def exists(self) -> bool:
        return bool(storage.list_files(self.uri, ".parquet"))


class PublishedSnapshotTarget(luigi.Target):
    """Some published snapshot of `score_date` under `output_root` (a folder
    with a `_MANIFEST.json`)."""

    def __init__(self, output_root: str, score_date: dt.date):
        self.output_root, self.score_date = output_root, score_date
        self.path = layout.score_date_dir(output_root, score_date)

    def exists(self) -> bool:
        pulled = pulls.read_pulls(self.output_root)
        return any(m.snapshot_id not in pulled for _, m in store.list_manifests(self.output_root, self.score_date))


class InputPartition(luigi.ExternalTask):
    """`root/table/dt=DATE/*.parquet`, produced outside this project."""

    root = luigi.Parameter(description="input root: local folder or gs://bucket/prefix")
    table = luigi.ChoiceParameter(choices=["enrollments", "engagement"])
    date = luigi.DateParameter()

    def output(self):
        return PartitionTarget(layout.input_partition(self.root, self.table, self.date))


class DailyScores(luigi.Task):
    """The daily job for logs up to `date`: publishes scores for `date + 1`."""

    date = luigi.DateParameter(description="last day of logs; the snapshot is for the day after")
    input_root = luigi.Parameter(description="input root: local folder or gs://bucket/prefix")
    output_root = luigi.Parameter(description="output root: local folder or gs://bucket/prefix")
    config = luigi.OptionalParameter(default=None, description="TOML file overriding the default config")
    warehouse = luigi.OptionalParameter(
        default=None, description="bq://PROJECT.DATASET or a .duckdb path; default OUT/warehouse.duckdb")
    skip_gate = luigi.Parameter(
        default="", description="gates to publish past (comma-separated, e.g. score_drift,row_count) after "
        "checking them by hand, as `oasis run --skip-gate`; measured and recorded as skipped")
    beam_args = luigi.ListParameter(
        default=[], significant=False,
        description='Beam pipeline options as a JSON list, e.g. ["--runner=DataflowRunner", "--project=P", ...]')

    @property
    def score_date(self) -> dt.date:
        return self.date + dt.timedelta(days=1)

    def options(self) -> RunOptions:
        return RunOptions(skip_gates=tuple(g.strip() for g in self.skip_gate.split(",") if g.strip()))

    def retry_hint(self) -> str:
        """How the gate-failure advice names this entry point: the same task with
        --skip-gate (RangeDaily passes it on as --DailyScores-skip-gate)."""
        return (f"rerun the task with the same parameters and --skip-gate {{gates}} (under RangeDaily: "
                f"--DailyScores-skip-gate {{gates}}, or `oasis backfill --start {self.date} --end {self.date} "
                f"--skip-gate NAME`)")

    def requires(self):
        return {t: InputPartition(root=self.input_root, table=t, date=self.date)
                for t in ("enrollments", "engagement")}

    def output(self):
        return PublishedSnapshotTarget(self.output_root, self.score_date)

    @classmethod
    def bulk_complete(cls, parameter_tuples):
        """The dates (of those given) already published: one listing of the
        snapshots per output root instead of one per date. `cls` may be a
        functools.partial carrying RangeDaily's `of_params`."""
        params = list(parameter_tuples)
        published: dict[str, set[str]] = {}
        done = []
        for p in params:
            task = cls(**p) if isinstance(p, dict) else cls(*p) if isinstance(p, (list, tuple)) else cls(p)
            root = task.output_root
            if root not in published:
                pulled = pulls.read_pulls(root)
                published[root] = {m.score_date for _, m in store.list_manifests(root) if m.snapshot_id not in pulled}
            if task.score_date in published[root]:
                done.append(p)
        return done

    def run(self):
        # Beam's PipelineOptions calls logging.basicConfig(), which gave the root
        # logger a handler, and Luigi's own records (which it prints through its
        # handler and then propagates) came out twice, tracebacks included. One
        # root handler of ours, leaving Luigi's records to Luigi.
        logs.configure(logs.log_format(), logging.getLogger().getEffectiveLevel(), exclude=("luigi",))
        with logs.bind(date=self.date):
            req = daily.RunRequest(as_of=self.date, input_root=self.input_root, output_root=self.output_root,
                                   config_path=self.config or None, warehouse=self.warehouse or None,
                                   beam_args=list(self.beam_args), options=self.options(),
                                   retry_hint=self.retry_hint())
            result = run_daily(req, progress=logs.progress, command="luigi")
            self.set_status_message(f"{result.status}: {result.manifest.snapshot_id}")


class OnlineStoreTarget(luigi.Target):
    """The online store in `repo` holds a snapshot of `score_date` or later."""

    def __init__(self, repo: str, score_date: dt.date):
        self.repo, self.score_date = repo, score_date
        self.path = repo

    def exists(self) -> bool:
        state = repository.current_state(self.repo)
        return bool(state) and dt.date.fromisoformat(state["score_date"]) >= self.score_date


@inherits(DailyScores)
class ServingSync(luigi.Task):
    """`DailyScores`, then the snapshot LATEST points to into the online store."""

    repo = luigi.OptionalParameter(default=None, description="the feature repository (default: OUT/feature_repo)")
    today = luigi.OptionalParameter(
        default=None, significant=False,
        description="the day serving uses the scores on, YYYY-MM-DD (default: today, UTC)")
    allow_stale = luigi.BoolParameter(default=False, significant=False,
                                      description="sync even a LATEST older than its valid_until")

    @property
    def repo_dir(self) -> str:
        return self.repo or layout.feature_repo(self.output_root)

    def requires(self):
        return self.clone(DailyScores)

    def output(self):
        return OnlineStoreTarget(self.repo_dir, self.date + dt.timedelta(days=1))

    def run(self):
        with logs.bind(date=self.date):
            today = dt.date.fromisoformat(self.today) if self.today else None
            result = serving_sync.observed_sync(self.output_root, self.repo_dir, today=today,
                                       allow_stale=self.allow_stale, progress=logs.progress)
            self.set_status_message(f"{result.action}: {result.snapshot_id}")
