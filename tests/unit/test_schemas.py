"""The table declarations: their three derived forms agree with each other, and
the inputs/outputs match the contract text of docs/design.md §3 and §5."""
import datetime as dt
import typing

import pyarrow as pa
import pytest
from apache_beam.typehints import schemas as beam_schemas
from apache_beam.utils.timestamp import Timestamp

import schemas
from schemas import ALL

# An independent statement of how each Arrow type must appear in BigQuery and as
# a Beam row annotation (not imported from schemas.core, so a wrong entry there
# is caught here).
ARROW_TO_BQ = {
    pa.string(): ("STRING", str),
    pa.bool_(): ("BOOLEAN", bool),
    pa.int64(): ("INTEGER", int),
    pa.float64(): ("FLOAT", float),
    pa.date32(): ("DATE", dt.date),
    pa.timestamp("us", tz="UTC"): ("TIMESTAMP", Timestamp),
}

TABLES = sorted(ALL)


def _unwrap_optional(annotation):
    """(inner type, is_optional)."""
    if typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        assert len(args) == 1, annotation
        return args[0], True
    return annotation, False


@pytest.mark.parametrize("name", TABLES)
def test_derived_forms_have_the_same_columns_in_order(name):
    table = ALL[name]
    assert table.name == name
    assert len(set(table.names)) == len(table.names), "duplicate column names"
    assert table.arrow().names == table.names
    assert [c["name"] for c in table.bigquery()] == table.names
    row_type = table.beam_row_type()
    assert list(row_type._fields) == table.names
    assert list(typing.get_type_hints(row_type)) == table.names


@pytest.mark.parametrize("name", TABLES)
def test_derived_forms_agree_on_type_and_nullability(name):
    table = ALL[name]
    hints = typing.get_type_hints(table.beam_row_type())
    for af, bq, decl in zip(table.arrow(), table.bigquery(), table.fields):
        inner, optional = _unwrap_optional(hints[af.name])
        assert af.nullable == decl.nullable, af.name
        assert optional == decl.nullable, af.name
        if pa.types.is_list(af.type):
            assert af.type.value_type == pa.string(), af.name
            assert (bq["type"], bq["mode"]) == ("STRING", "REPEATED"), af.name
            assert typing.get_origin(inner) is list and typing.get_args(inner) == (str,), af.name
            continue
        expected_bq, expected_py = ARROW_TO_BQ[af.type]
        assert bq["type"] == expected_bq, af.name
        assert bq["mode"] == ("NULLABLE" if decl.nullable else "REQUIRED"), af.name
        assert inner is expected_py, f"{name}.{af.name}: annotation {inner!r}, expected {expected_py!r}"


@pytest.mark.parametrize("name", TABLES)
def test_beam_row_type_gives_a_real_beam_schema(name):
    """Beam turns the row type into a schema with the declared nullability and
    no opaque (pickled) fields."""
    table = ALL[name]
    proto = beam_schemas.named_tuple_to_schema(table.beam_row_type())
    assert [f.name for f in proto.fields] == table.names
    for pf, decl in zip(proto.fields, table.fields):
        assert pf.type.nullable == decl.nullable, decl.name
        assert "pythonsdk_any" not in str(pf.type), f"{name}.{decl.name} is an opaque Any in Beam"


@pytest.mark.parametrize("name", TABLES)
def test_empty_and_conform_use_the_arrow_form(name):
    table = ALL[name]
    assert table.empty().schema == table.arrow()
    reversed_cols = table.empty().select(list(reversed(table.names)))
    assert table.conform(reversed_cols).schema == table.arrow()
    with pytest.raises(ValueError, match=table.names[0]):
        table.conform(table.empty().drop_columns([table.names[0]]))


def test_unknown_logical_type_is_rejected():
    with pytest.raises(ValueError, match="decimal"):
        schemas.Field("x", "decimal")


# ------------------------------------------------------------ docs/design.md §3 ---
# Written by hand from the tables in docs/design.md §3: (name, arrow type, nullable).
ENROLLMENTS_CONTRACT = [
    ("campaign_id", pa.string(), False),
    ("track_id", pa.string(), False),
    ("artist_id", pa.string(), False),
    ("licensor_id", pa.string(), False),
    ("market", pa.string(), False),
    ("surfaces", pa.list_(pa.string()), False),
    ("start_date", pa.date32(), False),
    ("end_date", pa.date32(), False),
    ("commission_rate", pa.float64(), False),
    ("release_date", pa.date32(), False),
    ("status", pa.string(), False),
    ("updated_at", pa.timestamp("us", tz="UTC"), False),
]

ENGAGEMENT_CONTRACT = [
    ("event_id", pa.string(), False),
    ("event_ts", pa.timestamp("us", tz="UTC"), False),
    ("user_id", pa.string(), False),
    ("track_id", pa.string(), False),
    ("market", pa.string(), False),
    ("surface", pa.string(), False),
    ("ms_played", pa.int64(), False),
    ("duration_ms", pa.int64(), False),
    ("skipped", pa.bool_(), False),
    ("saved", pa.bool_(), False),
    ("promoted", pa.bool_(), False),
    ("campaign_id", pa.string(), True),
    ("holdout", pa.bool_(), True),
]

EXPOSURES_CONTRACT = [
    ("exposure_id", pa.string(), False),
    ("event_ts", pa.timestamp("us", tz="UTC"), False),
    ("user_id", pa.string(), False),
    ("track_id", pa.string(), False),
    ("campaign_id", pa.string(), False),
    ("market", pa.string(), False),
    ("surface", pa.string(), False),
    ("arm", pa.string(), False),
]


@pytest.mark.parametrize("table, contract", [
    (schemas.ENROLLMENTS, ENROLLMENTS_CONTRACT),
    (schemas.ENGAGEMENT, ENGAGEMENT_CONTRACT),
    (schemas.EXPOSURES, EXPOSURES_CONTRACT),
])
def test_inputs_match_design_section_3(table, contract):
    assert [(f.name, f.type, f.nullable) for f in table.arrow()] == contract


def test_only_the_holdout_flag_may_be_absent_from_an_input_file():
    """docs/design.md §3: `engagement.holdout` may be missing from older partitions
    (it reads as null, i.e. false); every other input column is required."""
    assert schemas.ENGAGEMENT.optional_names == ["holdout"]
    assert schemas.ENROLLMENTS.optional_names == [] and schemas.EXPOSURES.optional_names == []
    full = schemas.ENGAGEMENT.arrow()
    older = pa.schema([f for f in full if f.name != "holdout"])
    assert schemas.schema_mismatches(full, older, schemas.ENGAGEMENT.optional_names) == []
    # without the optional list the same file is a mismatch (the old behaviour), and a
    # required column stays required
    assert schemas.schema_mismatches(full, older) == ["missing column 'holdout'"]
    no_saved = pa.schema([f for f in full if f.name != "saved"])
    assert schemas.schema_mismatches(full, no_saved, ["holdout"]) == ["missing column 'saved'"]
    with pytest.raises(ValueError, match="must be nullable"):
        schemas.Field("x", "bool", optional=True)


def test_input_keys_and_vocabularies_match_design():
    assert schemas.ENROLLMENTS.key == ("campaign_id", "track_id", "market")
    assert schemas.ENGAGEMENT.key == ("event_id",)
    assert set(schemas.PROMOTION_SURFACES) == {"radio", "autoplay", "mixes"}
    assert set(schemas.ALL_SURFACES) == {"radio", "autoplay", "mixes", "search", "playlist", "library", "other"}
    assert set(schemas.ENROLLMENT_STATUSES) == {"active", "paused", "cancelled"}
    assert set(schemas.INPUTS) == {"enrollments", "engagement", "exposures"}
    assert schemas.EXPOSURES.key == ("exposure_id",)
    assert set(schemas.ARMS) == {"treated", "ghost"}


# ------------------------------------------------------------ docs/design.md §5 ---
PROMOTION_SCORES_CONTRACT = [
    "score_date", "snapshot_id", "track_id", "market", "surface", "campaign_id", "artist_id",
    "licensor_id", "eligible", "reason", "plays", "skip_rate", "save_rate", "value",
    "supply_forecast", "max_promoted_plays", "planned_promoted_plays", "boost_probability", "score",
]
CAMPAIGN_DELIVERY_CONTRACT = [
    "campaign_id", "market", "surface", "flight_start", "flight_end", "delivered_to_date", "floor",
    "planned", "shortfall", "pacing_multiplier",
]
CAPACITY_CONTRACT = [
    "market", "surface", "total_forecast", "promoted_share_cap", "capacity", "artist_cap",
    "licensor_cap", "shortfall_penalty", "planned_total", "shadow_price", "serving_gain",
]
DELIVERY_RECONCILIATION_CONTRACT = [
    "track_id", "market", "surface", "planned_promoted_plays", "boost_probability", "realised_promoted_plays",
    "ratio",
]
CAMPAIGN_LIFT_CONTRACT = [
    "campaign_id", "market", "surface", "exposed_listeners_treated", "exposed_listeners_holdout", "lift",
    "lift_low", "lift_high", "historical_lift", "method",
]


@pytest.mark.parametrize("name, contract", [
    ("promotion_scores", PROMOTION_SCORES_CONTRACT),
    ("campaign_delivery", CAMPAIGN_DELIVERY_CONTRACT),
    ("capacity", CAPACITY_CONTRACT),
    ("delivery_reconciliation", DELIVERY_RECONCILIATION_CONTRACT),
    ("campaign_lift", CAMPAIGN_LIFT_CONTRACT),
])
def test_outputs_carry_design_section_5_columns(name, contract):
    table = schemas.OUTPUTS[name]
    missing = [c for c in contract + ["score_date", "snapshot_id"] if c not in table.names]
    assert not missing
    # The contract columns come first (tables.py promise), so `SELECT *` starts with them; a column the
    # contract gained later (capacity's serving_gain) is appended with the other later columns, since a
    # warehouse table only grows at its end (ADDED_LATER below).
    contract_positions = [table.names.index(c) for c in contract if c not in ADDED_LATER[name]]
    extras = [i for i, c in enumerate(table.names)
              if c not in contract + ["score_date", "snapshot_id"]]
    assert not extras or max(contract_positions) < min(extras)


# Columns added after tables were first published are nullable: a warehouse table that exists adds them
# (BigQuery cannot add a REQUIRED column), and rows published before them hold nulls.
ADDED_LATER = {
    "promotion_scores": ["flight_end", "supply_forecast_low", "supply_forecast_high", "history_days",
                         "effective_plays", "pulled_back", "dislike_probability", "promoted_plays", "promoted_skips",
                         "promoted_dislike_probability"],
    "capacity": ["total_forecast_low", "total_forecast_high", "prior_mean_skip", "prior_mean_save", "serving_gain",
                 "serving_gain_estimate", "gain_realised", "gain_requested", "serving_response",
                 "gain_requested_organic", "reconciled_planned", "reconciled_realised", "delivery_ratio",
                 "delivery_miss_days"],
    "campaign_delivery": [],
    "prices": [],
    "delivery_reconciliation": [],
    "campaign_lift": [],
}


def test_output_nullability_and_partitioning():
    # Only `reason` may be null (it is null when the row is eligible) among the first columns, and, where a
    # value does not exist, a ratio (and the plan's campaign and snapshot) where nothing was planned, and in
    # campaign_lift what an intent-to-treat row or a missing pre-period cannot measure; then the columns
    # added later, at the end (nullable: rows loaded before them have none); every output is partitioned by
    # score_date, which therefore is REQUIRED.
    allowed = {"promotion_scores": ["reason"], "delivery_reconciliation": ["ratio", "campaign_id", "plan_snapshot_id"],
               "campaign_lift": ["historical_lift", "first_exposure_date", "new_listeners_treated",
                                 "new_listeners_holdout", "streams_per_day_before", "streams_per_day_after"]}
    for table in schemas.OUTPUTS.values():
        nullable = [f.name for f in table.fields if f.nullable]
        later = ADDED_LATER[table.name]
        assert nullable == allowed.get(table.name, []) + later
        assert table.names[len(table.names) - len(later):] == later
        assert table.key[0] == "score_date"
        assert table.field("score_date").type == "date"
    assert schemas.PROMOTION_SCORES.key == ("score_date", "track_id", "market", "surface")
    assert schemas.CAPACITY.key == ("score_date", "market", "surface")
    assert schemas.CAMPAIGN_DELIVERY.key == ("score_date", "campaign_id", "market", "surface")
    assert schemas.DELIVERY_RECONCILIATION.key == ("score_date", "track_id", "market", "surface")
    assert schemas.CAMPAIGN_LIFT.key == ("score_date", "campaign_id", "market", "surface")
