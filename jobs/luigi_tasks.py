"""Luigi tasks for the daily schedule and range backfills.

    luigi --module jobs.luigi_tasks DailyScores --date 2026-11-24 \\
        --input-root IN --output-root OUT --local-scheduler

    luigi --module jobs.luigi_tasks RangeDaily --of DailyScores \\
        --start 2026-11-01 --stop 2026-11-25 --days-back 400 --local-scheduler \\
        --DailyScores-input-root IN --DailyScores-output-root OUT

* `InputPartition(root, table, date)`: an input partition folder; exists when
  it holds at least one Parquet file.
* `DailyScores(date, input_root, output_root, config, warehouse)`: `date` is
  the last day of logs (as `oasis run --date`); it requires that day's
  enrollments and engagement partitions and publishes the snapshot of score
  date `date + 1` through `jobs.run.daily.run`.

  Complete when a published snapshot (a `_MANIFEST.json`, the file a publish
  writes last in the snapshot folder, only after validation passed) that no
  rollback pulled exists for score date `date + 1` under `output_root`. A date
  whose snapshots were all pulled is not complete, and running it publishes
  nothing while the inputs, config and code are the same (the run says why
  and the task fails) until someone republishes or changes them. It does not compare the run
  fingerprint: a date published once is done for the scheduler even if its
  inputs, config or code changed since; `oasis backfill` (which skips only
  identical runs) or `oasis run --force` republishes such dates.

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

import luigi
from luigi.tools.range import RangeDaily  # noqa: F401 - registers RangeDaily for `luigi --module jobs.luigi_tasks`

from jobs import layout, logs
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
    beam_args = luigi.ListParameter(
        default=[], significant=False,
        description='Beam pipeline options as a JSON list, e.g. ["--runner=DataflowRunner", "--project=P", ...]')

    @property
    def score_date(self) -> dt.date:
        return self.date + dt.timedelta(days=1)

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
        with logs.bind(date=self.date):
            req = daily.RunRequest(as_of=self.date, input_root=self.input_root, output_root=self.output_root,
                                   config_path=self.config or None, warehouse=self.warehouse or None,
                                   beam_args=list(self.beam_args), options=RunOptions(),
                                   retry_hint="rerun the task with the same parameters and")
            result = daily.run(req, progress=logs.progress)
            self.set_status_message(f"{result.status}: {result.manifest.snapshot_id}")
