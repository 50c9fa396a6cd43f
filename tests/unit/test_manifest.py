"""The manifest's format versions: version 3 adds valid_until and the prices
table; older manifests still read, with the defaults a reader needs."""
from __future__ import annotations

import datetime as dt

import pytest

from jobs.manifest import FORMAT_VERSION, Manifest, ManifestError

SCORE_DATE = dt.date(2026, 11, 25)


def doc(**over) -> dict:
    d = {"snapshot_id": "20261125T060000Z-abcdef", "score_date": SCORE_DATE.isoformat(), "as_of": "2026-11-24",
         "created_at": "2026-11-25T06:00:00+00:00", "run_fingerprint": "fp", "config": {},
         "tables": {"promotion_scores": {"rows": 1, "content_sha256": "x",
                                         "files": [{"path": "promotion_scores/p.parquet", "rows": 1, "bytes": 9,
                                                    "sha256": "y"}]}}}
    d.update(over)
    return {k: v for k, v in d.items() if v is not None}


@pytest.mark.parametrize("version", [None, 1, 2])
def test_an_older_manifest_reads_with_the_default_valid_until_and_no_prices(version):
    m = Manifest.from_dict(doc(format_version=version))
    assert m.format_version == (version or 1)
    assert m.valid_until == SCORE_DATE + dt.timedelta(days=2)  # the default serving_max_age_days
    assert not m.lists_table("prices") and m.lists_table("promotion_scores")


def test_valid_until_round_trips_and_the_current_version_lists_prices():
    m = Manifest.from_dict(doc(format_version=FORMAT_VERSION, valid_until="2026-11-30"))
    assert FORMAT_VERSION >= 3 and m.valid_until == dt.date(2026, 11, 30) and m.lists_table("prices")
    again = Manifest.from_json(m.to_json())
    assert again.valid_until == m.valid_until and again.to_dict() == m.to_dict()
    assert m.to_dict()["valid_until"] == "2026-11-30"


def test_a_bad_valid_until_or_a_newer_format_is_an_error_naming_it():
    with pytest.raises(ManifestError, match="'valid_until' is not a date"):
        Manifest.from_dict(doc(valid_until="soon"))
    with pytest.raises(ManifestError, match=f"format_version {FORMAT_VERSION + 1}"):
        Manifest.from_dict(doc(format_version=FORMAT_VERSION + 1))
