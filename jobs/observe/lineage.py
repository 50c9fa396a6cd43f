"""OpenLineage events for every run, through the official `openlineage-python`
client: START when a run begins, COMPLETE or FAIL when it ends.

Where events go is the client's own configuration, never ours: its
environment variables (`OPENLINEAGE_URL`, `OPENLINEAGE__TRANSPORT__TYPE=file`
and the like), `OPENLINEAGE_CONFIG` or an `openlineage.yml` (console, file,
HTTP, Kafka, ...). When none of that is set, or `OPENLINEAGE_DISABLED=true`,
nothing is emitted and no client is built (the client's own fallback would
print every event to the console).

Each emission waits at most `OASIS_LINEAGE_TIMEOUT_S` seconds (default 5) and
never raises; a transport that fails or hangs once is not used again by the
process (`jobs.observe.bounded.Breaker`), so a receiver that is down delays a
run by at most that timeout.

The events: job `daily_scores` (for `run`, each date of `backfill` and the
Luigi task) or `serving_sync`, in namespace `OPENLINEAGE_NAMESPACE` (default
`oasis`); the run id is a UUID derived from the run's id (the snapshot id it
publishes under), so it is the same in every event of a run and on every
machine. COMPLETE carries as inputs the partitions read (with their files'
fingerprints), as outputs the snapshot tables and the warehouse tables (schema,
row counts, the gates' results as data-quality assertions); FAIL carries the
error message. No listener data and no option values go into an event.
"""
from __future__ import annotations

import hashlib
import logging
import os
import posixpath
import uuid
from typing import ClassVar

import attr
from openlineage.client import OpenLineageClient
from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.facet_v2 import (
    InputDatasetFacet, data_quality_assertions_dataset as dqa, dataset_version_dataset, error_message_run,
    input_statistics_input_dataset, job_type_job, nominal_time_run, output_statistics_output_dataset,
    schema_dataset, tags_run,
)
from openlineage.client.transport.noop import NoopConfig, NoopTransport

from jobs import layout
from jobs.manifest import Manifest
from jobs.observe.bounded import Breaker
from jobs.observe.records import RunRecord
from pipelines import storage
from schemas import DAILY_AGGREGATES, ENGAGEMENT, ENROLLMENTS, OUTPUTS, SURFACE_TOTALS, Table

log = logging.getLogger(__name__)

TIMEOUT_ENV = "OASIS_LINEAGE_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 5.0
NAMESPACE_ENV = "OPENLINEAGE_NAMESPACE"
PRODUCER = "urn:oasis-scores"
DAILY_JOB, SYNC_JOB = "daily_scores", "serving_sync"
# a fixed namespace for uuid5: the same run id gives the same lineage run id everywhere
_RUN_NS = uuid.UUID("6f1d1c56-3f0e-4c7e-9a55-0a5f2c9b7e11")


def run_uuid(run_id: str) -> str:
    return str(uuid.uuid5(_RUN_NS, run_id))


def timeout_s() -> float:
    try:
        value = float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S))
    except ValueError:
        log.warning("%s is not a number; using %g s", TIMEOUT_ENV, DEFAULT_TIMEOUT_S)
        return DEFAULT_TIMEOUT_S
    return value if value > 0 else DEFAULT_TIMEOUT_S


def configured() -> bool:
    """True when the client's own configuration selects a transport and lineage
    is not disabled. Mirrors the client's transport resolution without its
    console fallback: a probe client with an explicit no-op transport still
    merges the config file and the OPENLINEAGE__* variables."""
    if os.environ.get("OPENLINEAGE_DISABLED", "").strip().lower() == "true":
        return False
    if os.environ.get("OPENLINEAGE_URL"):
        return True
    client_log = logging.getLogger("openlineage.client.client")
    level = client_log.level
    client_log.setLevel(logging.WARNING)  # the probe's "will use `noop` transport" line
    try:
        transport = OpenLineageClient(transport=NoopTransport(NoopConfig())).config.transport or {}
    except Exception:  # noqa: BLE001 - an unreadable lineage config must not fail a run
        log.warning("the OpenLineage configuration cannot be read; no lineage events", exc_info=True)
        return False
    finally:
        client_log.setLevel(level)
    return bool(transport.get("type"))


class Emitter:
    """Sends events through the configured client, each within the timeout."""

    def __init__(self, timeout: float | None = None):
        self.breaker = Breaker("lineage", timeout if timeout is not None else timeout_s())
        self.client: OpenLineageClient | None = None
        if configured():
            try:
                self.client = OpenLineageClient()
            except Exception:  # noqa: BLE001
                log.warning("cannot build the OpenLineage client; no lineage events", exc_info=True)

    @property
    def enabled(self) -> bool:
        return self.client is not None

    def emit(self, event: RunEvent) -> bool:
        if self.client is None:
            return False
        return self.breaker.call(f"emit {event.eventType.value}", lambda: self.client.emit(event))

    def close(self) -> None:
        if self.client is not None:  # an asynchronous transport flushes here
            self.breaker.call("close", lambda: self.client.close(self.breaker.timeout))


# ------------------------------------------------------------------ events ---
@attr.define
class PartitionFilesInputDatasetFacet(InputDatasetFacet):
    """The files of an input partition with their fingerprints (as in the manifest)."""
    files: list[dict] = attr.field(factory=list)
    _additional_skip_redact: ClassVar[list[str]] = ["files"]

    @staticmethod
    def _get_schema() -> str:
        return "urn:oasis-scores:facets:PartitionFilesInputDatasetFacet"


def start_event(record: RunRecord) -> RunEvent:
    return _event(RunState.START, record)


def end_event(record: RunRecord, manifest: Manifest | None = None, snapshot_folder: str | None = None) -> RunEvent:
    """COMPLETE for a run that succeeded, FAIL (with the reason) otherwise. A
    published run names what it read and wrote; an already published one
    neither (it read and wrote nothing)."""
    if not record.succeeded:
        return _event(RunState.FAIL, record)
    if record.status != "published" or manifest is None or snapshot_folder is None:
        return _event(RunState.COMPLETE, record)
    warehouse = record.outputs.get("warehouse")
    return _event(RunState.COMPLETE, record, inputs=input_datasets(manifest),
                  outputs=snapshot_datasets(manifest, snapshot_folder) + warehouse_datasets(manifest, warehouse))


def _event(state: RunState, record: RunRecord, inputs=(), outputs=()) -> RunEvent:
    tags = {"command": record.command, "run_id": record.run_id, "logs_date": record.logs_date,
            "status": "running" if state == RunState.START else record.status}
    facets: dict = {"tags": tags_run.TagsRunFacet(tags=[
        tags_run.TagsRunFacetFields(key, str(value), "OASIS") for key, value in tags.items() if value])}
    if record.score_date:
        facets["nominalTime"] = nominal_time_run.NominalTimeRunFacet(
            nominalStartTime=f"{record.score_date}T00:00:00Z")
    if state == RunState.FAIL:
        facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
            message=f"{record.status}: {record.reason}", programmingLanguage="python")
    job = SYNC_JOB if record.command == "serving sync" else DAILY_JOB
    return RunEvent(
        eventType=state,
        eventTime=(record.started_at if state == RunState.START else record.finished_at).isoformat(),
        run=Run(runId=run_uuid(record.run_id), facets=facets),
        job=Job(namespace=os.environ.get(NAMESPACE_ENV) or "oasis", name=job, facets={
            "jobType": job_type_job.JobTypeJobFacet(processingType="BATCH", integration="OASIS", jobType="JOB")}),
        inputs=list(inputs), outputs=list(outputs), producer=PRODUCER)


# ---------------------------------------------------------------- datasets ---
def dataset_name(uri: str) -> tuple[str, str]:
    """(namespace, name) of a file or folder, as OpenLineage names them: `file`
    and the absolute path locally, `gs://bucket` and the object path on GCS."""
    if storage.is_gcs(uri):
        bucket, _, path = uri[len("gs://"):].partition("/")
        return f"gs://{bucket}", path.strip("/")
    return "file", os.path.abspath(uri)


def schema_facet(table: Table) -> schema_dataset.SchemaDatasetFacet:
    return schema_dataset.SchemaDatasetFacet(fields=[
        schema_dataset.SchemaDatasetFacetFields(name=f.name, type=f.type, description=f.doc or None,
                                                ordinal_position=i)
        for i, f in enumerate(table.fields, 1)])


def partition_version(fingerprints: list[str]) -> str:
    """One partition's version: its file's fingerprint, or for several files a
    sha256 over their sorted fingerprints."""
    if len(fingerprints) == 1:
        return fingerprints[0]
    return "sha256:" + hashlib.sha256("\n".join(sorted(fingerprints)).encode()).hexdigest()


def _input_schema(kind: str, folder: str) -> Table:
    if kind == "aggregates":
        return SURFACE_TOTALS if posixpath.basename(folder.rstrip("/")) == "totals" else DAILY_AGGREGATES
    return ENROLLMENTS if kind == "enrollments" else ENGAGEMENT


def input_datasets(manifest: Manifest) -> list[InputDataset]:
    """One dataset per partition folder read: the raw input partitions of the
    days built and the stored aggregates of the days reused."""
    out = []
    for kind in ("enrollments", "engagement", "aggregates"):
        by_folder: dict[str, dict[str, str]] = {}
        for uri, fp in getattr(manifest.inputs, kind).items():
            by_folder.setdefault(uri.rsplit("/", 1)[0], {})[uri] = fp
        for folder, files in sorted(by_folder.items()):
            namespace, name = dataset_name(folder)
            day = layout.parse_day_dirname(posixpath.basename(folder)) if kind != "aggregates" else None
            rows = manifest.bad_rows.get(f"{kind}/{day.isoformat()}", {}).get("rows") if day else None
            input_facets: dict = {"oasisFiles": PartitionFilesInputDatasetFacet(files=[
                {"file": f.rsplit("/", 1)[-1], "fingerprint": fp} for f, fp in sorted(files.items())])}
            if rows is not None:
                input_facets["inputStatistics"] = input_statistics_input_dataset.InputStatisticsInputDatasetFacet(
                    rowCount=int(rows), fileCount=len(files))
            out.append(InputDataset(namespace=namespace, name=name, inputFacets=input_facets, facets={
                "schema": schema_facet(_input_schema(kind, folder)),
                "version": dataset_version_dataset.DatasetVersionDatasetFacet(
                    datasetVersion=partition_version(list(files.values())))}))
    return out


def gate_assertions(manifest: Manifest) -> dqa.DataQualityAssertionsDatasetFacet:
    return dqa.DataQualityAssertionsDatasetFacet(assertions=[
        dqa.Assertion(assertion=g.name, success=bool(g.passed), name=g.name, description=g.detail or None,
                      actual=None if g.measured is None else str(g.measured),
                      expected=None if g.threshold is None else str(g.threshold),
                      severity="skipped" if g.skipped else "error")
        for g in manifest.validation])


def snapshot_datasets(manifest: Manifest, folder: str) -> list[OutputDataset]:
    """The snapshot's tables; each carries every gate's verdict (the snapshot
    is published only when none blocks)."""
    out = []
    for name, entry in sorted(manifest.tables.items()):
        namespace, path = dataset_name(layout.table_dir(folder, name))
        facets: dict = {"version": dataset_version_dataset.DatasetVersionDatasetFacet(
            datasetVersion=f"sha256:{entry.content_sha256}"), "dataQualityAssertions": gate_assertions(manifest)}
        if name in OUTPUTS:
            facets["schema"] = schema_facet(OUTPUTS[name])
        out.append(OutputDataset(namespace=namespace, name=path, facets=facets, outputFacets={
            "outputStatistics": output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
                rowCount=entry.rows, size=sum(f.bytes for f in entry.files), fileCount=len(entry.files))}))
    return out


def warehouse_datasets(manifest: Manifest, warehouse_uri: str | None) -> list[OutputDataset]:
    """The warehouse tables the snapshot was loaded into (the score date's
    partition): `bigquery` / PROJECT.DATASET.TABLE, or `duckdb://PATH` / TABLE."""
    if not warehouse_uri:
        return []
    if warehouse_uri.startswith("bq://"):
        namespace, prefix = "bigquery", warehouse_uri[len("bq://"):] + "."
    else:
        path = warehouse_uri[len("duckdb://"):] if warehouse_uri.startswith("duckdb://") else warehouse_uri
        namespace, prefix = f"duckdb://{os.path.abspath(path)}", ""
    return [OutputDataset(namespace=namespace, name=f"{prefix}{name}",
                          facets={"schema": schema_facet(OUTPUTS[name])} if name in OUTPUTS else {},
                          outputFacets={"outputStatistics":
                                        output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
                                            rowCount=entry.rows)})
            for name, entry in sorted(manifest.tables.items())]

