"""OASIS promotion-score pipeline.

setup.py is also what ships the code to remote Beam workers (``--setup_file``),
so keep runtime dependencies here and pinned to ranges the worker image accepts.
"""
from setuptools import find_packages, setup

RUNTIME = [
    "apache-beam[gcp]>=2.77,<2.78",
    "pyarrow>=17,<26",
    "numpy>=1.26,<2.5",
    "pandas>=2.2,<2.4",
    "scipy>=1.13,<2",
    "duckdb>=1.1,<2",
    "luigi>=3.5,<4",
    "google-cloud-storage>=2.16,<4",
    "google-cloud-bigquery>=3.20,<4",
    "openlineage-python>=1.54,<2",  # lineage events (jobs.observe.lineage); adds httpx2, httpcore2, truststore
    "prometheus-client>=0.20,<1",   # run metrics (jobs.observe.metrics); feast 0.67 (serving extra) needs <0.25
]

# `oasis serving sync` (the online store), for serving teams and CI: never on the Beam
# workers, which the runtime list above is shipped to. feast 0.67 brings 38 packages (dask,
# fastapi, SQLAlchemy, pydantic, ...; 115 MB beside Beam) and installs beside Beam 2.77
# (protobuf 6.33); 52 s on top of the base install, measured on a busy 2-core machine.
SERVING = [
    "feast>=0.67,<0.68",
]

TEST = [
    "pytest>=8,<10",
    "hypothesis>=6.100,<7",
    "db-dtypes>=1.2,<2",
    "pillow>=10,<13",  # the report test reads its Chromium screenshots
    "pytest-timeout>=2.3,<3",  # a hung test fails after pytest.ini's timeout instead of stalling the suite
    "pytest-xdist>=3.6,<4",  # `make test` runs the suite on every core (one worker per core, a module per worker)
]

# `make mutation` only (mutation testing of the pure modules, docs/testing.md); never on workers.
MUTATION = ["mutmut==3.8.1"]

setup(
    name="oasis-scores",
    version="0.1.0",
    description="Daily music-promotion allocation scores: Beam pipeline, snapshots, warehouse.",
    python_requires=">=3.11",
    packages=find_packages(include=["schemas", "schemas.*", "pipelines", "pipelines.*", "jobs", "jobs.*"]),
    install_requires=RUNTIME,
    extras_require={"test": TEST, "serving": SERVING, "mutation": MUTATION},
    entry_points={"console_scripts": ["oasis=jobs.cli.main:main"]},
)
