"""Every table of the product, declared once (docs/design.md §3 inputs, §5 outputs).

The contract columns come first in each output table; a few extra columns
(marked "extra" in their doc) carry what `oasis explain` and analysts need to
see why a number is what it is.
"""
from schemas.core import Field as F
from schemas.core import Table

PROMOTION_SURFACES = ("radio", "autoplay", "mixes")
ALL_SURFACES = PROMOTION_SURFACES + ("search", "playlist", "library", "other")
ENROLLMENT_STATUSES = ("active", "paused", "cancelled")
ARMS = ("treated", "ghost")  # exposures: the boost was applied / a holdout listener for whom it would have been
LIFT_METHODS = ("exposures", "intent_to_treat")

# ---------------------------------------------------------------- inputs ---
ENROLLMENTS = Table(
    "enrollments",
    (
        F("campaign_id", "string", doc="one licensor's campaign for one month"),
        F("track_id", "string", doc="enrolled track"),
        F("artist_id", "string", doc="primary artist"),
        F("licensor_id", "string", doc="label or distributor"),
        F("market", "string", doc="ISO 3166-1 alpha-2, upper case; one row per market"),
        F("surfaces", "list<string>", doc="subset of radio, autoplay, mixes"),
        F("start_date", "date", doc="first day of the flight, inclusive"),
        F("end_date", "date", doc="last day of the flight, inclusive"),
        F("commission_rate", "double", doc="in (0, 1), typically 0.30; NaN and infinity are out of range"),
        F("release_date", "date", doc="earliest release of the track"),
        F("status", "string", doc="active, paused or cancelled"),
        F("updated_at", "timestamp", doc="the latest row per (campaign_id, track_id, market) wins"),
    ),
    doc="The campaign system's full export of enrollments as of one day.",
    key=("campaign_id", "track_id", "market"),
)

ENGAGEMENT = Table(
    "engagement",
    (
        F("event_id", "string", doc="unique; a repeated event_id counts once, within its day and across "
                                    "dedupe_lookback_days days before it"),
        F("event_ts", "timestamp", doc="when the play started"),
        F("user_id", "string", doc="pseudonymous listener id"),
        F("track_id", "string"),
        F("market", "string", doc="ISO 3166-1 alpha-2, upper case"),
        F("surface", "string", doc="radio, autoplay, mixes, search, playlist, library, other"),
        F("ms_played", "int64", doc=">= 0, at most a day (86,400,000)"),
        F("duration_ms", "int64", doc="> 0, at most a day (86,400,000)"),
        F("skipped", "bool", doc="skipped before 30 s"),
        F("saved", "bool", doc="saved to the library from this play"),
        F("promoted", "bool", doc="this play came from a promotion boost"),
        F("campaign_id", "string", nullable=True, doc="set when promoted"),
        F("holdout", "bool", nullable=True, optional=True,
          doc="the listener was in the promotion holdout when the play happened; a missing column or null "
              "means false"),
    ),
    doc="One UTC day of play events.",
    key=("event_id",),
)

EXPOSURES = Table(
    "exposures",
    (
        F("exposure_id", "string", doc="unique; a repeated exposure_id counts once"),
        F("event_ts", "timestamp", doc="when serving decided"),
        F("user_id", "string", doc="pseudonymous listener id"),
        F("track_id", "string", doc="the boosted (or would-be boosted) candidate"),
        F("campaign_id", "string"),
        F("market", "string", doc="ISO 3166-1 alpha-2, upper case"),
        F("surface", "string", doc="radio, autoplay or mixes"),
        F("arm", "string", doc="treated (the boost was applied) or ghost (a holdout listener for whom it "
                               "would have been)"),
    ),
    doc="Optional: serving's log of promotion decisions, one UTC day.",
    key=("exposure_id",),
)

# --------------------------------------------------------- intermediate ---
DAILY_AGGREGATES = Table(
    "daily_aggregates",
    (
        F("dt", "date", doc="the UTC day of the events"),
        F("track_id", "string"),
        F("market", "string"),
        F("surface", "string", doc="a promotion surface"),
        F("plays", "int64", doc="distinct events"),
        F("listeners", "int64", doc="distinct listeners that day"),
        F("skips", "int64"),
        F("saves", "int64"),
        F("promoted_plays", "int64"),
        F("ms_played", "int64"),
        F("promoted_skips", "int64", nullable=True,
          doc="skips of promoted plays (null in format-1 aggregates whose raw day is gone)"),
        F("promoted_saves", "int64", nullable=True,
          doc="saves from promoted plays (null in format-1 aggregates whose raw day is gone)"),
    ),
    doc="Per (track, market, promotion surface, day) signals of every track with promotion-surface plays.",
    key=("dt", "track_id", "market", "surface"),
)

# The format of stored daily aggregates, recorded in each day's _SUCCESS.json and in the manifest:
#   1  only the tracks of that day's enrollment export; no promoted_skips / promoted_saves
#   2  every track with promotion-surface plays (a newly enrolled track keeps its history), with
#      promoted_skips and promoted_saves
# A run rebuilds an older stored day from its raw partition when it still exists.
AGGREGATE_FORMAT_VERSION = 2

SURFACE_TOTALS = Table(
    "surface_totals",
    (
        F("dt", "date"),
        F("market", "string"),
        F("surface", "string"),
        F("plays", "int64", doc="all tracks, distinct events"),
        F("skips", "int64"),
        F("saves", "int64"),
        F("promoted_plays", "int64"),
    ),
    doc="Per (market, promotion surface, day) totals over all tracks: baselines and supply.",
    key=("dt", "market", "surface"),
)

# Per-listener daily facts behind campaign_lift. The listener is a 64-bit hash
# of the user id (pipelines.holdout.listener_keys), never the id itself; they
# live under OUT/aggregates only (never in a snapshot or the warehouse).
LISTENER_DAYS = Table(
    "listener_days",
    (
        F("dt", "date"),
        F("track_id", "string", doc="a track of that day's enrollment export"),
        F("market", "string"),
        F("listener_key", "int64", doc="hash of the user id"),
        F("streams", "int64", doc="distinct plays of at least 30 s, any surface"),
        F("saves", "int64", doc="distinct plays saved to the library"),
        F("holdout", "bool", doc="the logged holdout flag (null read as false)"),
    ),
    doc="Per (track, market, listener, day): streams and saves of enrolled tracks.",
    key=("dt", "track_id", "market", "listener_key"),
)

EXPOSURE_DAYS = Table(
    "exposure_days",
    (
        F("dt", "date"),
        F("campaign_id", "string"),
        F("market", "string"),
        F("surface", "string"),
        F("track_id", "string"),
        F("listener_key", "int64", doc="hash of the user id"),
        F("arm", "string", doc="treated or ghost"),
        F("first_ts", "timestamp", doc="the day's first exposure"),
        F("exposures", "int64", doc="distinct exposures that day"),
        F("streams_after", "int64", doc="streams of the track that day from first_ts on"),
        F("saves_after", "int64", doc="saves of the track that day from first_ts on"),
    ),
    doc="Per (campaign, market, surface, track, listener, arm, day): exposures and what followed that day.",
    key=("dt", "campaign_id", "market", "surface", "track_id", "listener_key", "arm"),
)

MARKET_LISTENERS = Table(
    "market_listeners",
    (
        F("dt", "date"),
        F("market", "string"),
        F("holdout", "bool", doc="the logged holdout flag"),
        F("listeners", "int64", doc="distinct listeners with at least one play that day"),
    ),
    doc="Per (market, holdout flag, day): active listeners, the intent-to-treat populations.",
    key=("dt", "market", "holdout"),
)

DEAD_LETTERS = Table(
    "dead_letters",
    (
        F("dt", "date", doc="the input partition"),
        F("source", "string", doc="enrollments, engagement or exposures"),
        F("source_file", "string"),
        F("reason", "string", doc="the first contract rule the row breaks"),
        F("row_json", "string", doc="the raw input row"),
    ),
    doc="Input rows that break the contract, with the reason. Lives under the output root only.",
)

# --------------------------------------------------------------- outputs ---
PROMOTION_SCORES = Table(
    "promotion_scores",
    (
        F("score_date", "date"),
        F("snapshot_id", "string"),
        F("track_id", "string"),
        F("market", "string"),
        F("surface", "string"),
        F("campaign_id", "string"),
        F("artist_id", "string"),
        F("licensor_id", "string"),
        F("eligible", "bool"),
        F("reason", "string", nullable=True, doc="why not eligible; null when eligible"),
        F("plays", "int64", doc="plays on this surface in the window"),
        F("skip_rate", "double", doc="skip rate shrunk toward the (market, surface) baseline"),
        F("save_rate", "double", doc="save rate shrunk toward the (market, surface) baseline"),
        F("value", "double", doc="v = save lift - lambda * skip lift"),
        F("supply_forecast", "double", doc="E: forecast organic plays for the score date"),
        F("max_promoted_plays", "double", doc="rho * E (0 when ineligible)"),
        F("planned_promoted_plays", "double", doc="x: the allocation"),
        F("boost_probability", "double", doc="min(1, x / (E * serving_gain)): what serving reads"),
        F("score", "double", doc="x / (rho * E), in [0, 1]"),
        F("skips", "int64", doc="extra: skips in the window"),
        F("saves", "int64", doc="extra: saves in the window"),
        F("weighted_plays", "double", doc="extra: decay-weighted plays used by the estimates"),
        F("release_date", "date", doc="extra: from the enrollment"),
        F("flight_end", "date", nullable=True,
          doc="last day of the row's campaign flight: never served after it (null in rows a warehouse loaded "
          "before the column existed)"),
        F("supply_forecast_low", "double", nullable=True,
          doc="lower end of E's 80% interval (null with forecast_method = decayed_mean)"),
        F("supply_forecast_high", "double", nullable=True,
          doc="upper end of E's 80% interval (null with forecast_method = decayed_mean)"),
        F("history_days", "int64", nullable=True,
          doc="extra: window days observed since the track's first play in the market"),
        F("effective_plays", "double", nullable=True,
          doc="extra: the binomial sample size of the decay-weighted rates, (sum w n)^2 / sum w^2 n"),
        F("pulled_back", "bool", nullable=True,
          doc="extra: the listener guardrail holds the row back (whatever the first reason)"),
        F("dislike_probability", "double", nullable=True,
          doc="extra: P(skip rate > baseline + delta); null where the guardrail was not evaluated"),
        F("promoted_plays", "int64", nullable=True, doc="extra: promoted plays on this surface in the window"),
        F("promoted_skips", "int64", nullable=True, doc="extra: their skips"),
        F("promoted_dislike_probability", "double", nullable=True,
          doc="extra: P(promoted skip rate > organic skip rate + delta); null where not evaluated"),
    ),
    doc="One row per enrolled (track, market, promotion surface), eligible or not.",
    key=("score_date", "track_id", "market", "surface"),
)

CAMPAIGN_DELIVERY = Table(
    "campaign_delivery",
    (
        F("score_date", "date"),
        F("snapshot_id", "string"),
        F("campaign_id", "string"),
        F("market", "string"),
        F("surface", "string"),
        F("flight_start", "date"),
        F("flight_end", "date"),
        F("delivered_to_date", "double", doc="promoted plays delivered since flight start"),
        F("floor", "double", doc="F_c: the day's fair-delivery floor"),
        F("planned", "double", doc="sum of x over the campaign's tracks"),
        F("shortfall", "double", doc="u_c = max(0, floor - planned)"),
        F("pacing_multiplier", "double", doc=">1 when behind pace, <1 when ahead"),
        F("licensor_id", "string", doc="extra"),
        F("eligible_tracks", "int64", doc="extra"),
        F("max_boost", "double", doc="extra: sum of rho * E over eligible tracks"),
    ),
    doc="Per (campaign, market, promotion surface): floor, plan and pacing.",
    key=("score_date", "campaign_id", "market", "surface"),
)

CAPACITY = Table(
    "capacity",
    (
        F("score_date", "date"),
        F("snapshot_id", "string"),
        F("market", "string"),
        F("surface", "string"),
        F("total_forecast", "double", doc="S: forecast total plays"),
        F("promoted_share_cap", "double", doc="kappa"),
        F("capacity", "double", doc="K = kappa * S"),
        F("artist_cap", "double", doc="phi * K"),
        F("licensor_cap", "double", doc="psi * K"),
        F("shortfall_penalty", "double", doc="p"),
        F("planned_total", "double", doc="sum of x"),
        F("shadow_price", "double", doc="dual value of the capacity constraint"),
        F("baseline_skip_rate", "double", doc="extra"),
        F("baseline_save_rate", "double", doc="extra"),
        F("prior_strength_skip", "double", doc="extra: beta prior alpha+beta for skips"),
        F("prior_strength_save", "double", doc="extra: beta prior alpha+beta for saves"),
        F("candidates", "int64", doc="extra: enrolled rows"),
        F("eligible_rows", "int64", doc="extra"),
        F("total_forecast_low", "double", nullable=True, doc="extra: lower end of S's 80% interval"),
        F("total_forecast_high", "double", nullable=True, doc="extra: upper end of S's 80% interval"),
        F("prior_mean_skip", "double", nullable=True,
          doc="extra: the skip-rate prior's mean (the enrolled tracks' pool): what rates are shrunk toward"),
        F("prior_mean_save", "double", nullable=True, doc="extra: the same for saves"),
        F("serving_gain", "double", nullable=True, doc="g-hat: the serving gain boost_probability is divided by "
          "(1 until calibrated, or with calibration off)"),
        F("serving_gain_estimate", "double", nullable=True,
          doc="extra: the calibrated gain, whether or not it is applied"),
        F("gain_realised", "double", nullable=True,
          doc="extra: decay-weighted realised promoted plays behind the estimate"),
        F("gain_requested", "double", nullable=True,
          doc="extra: decay-weighted boost_probability * supply_forecast behind the estimate"),
        F("serving_response", "double", nullable=True, doc="extra: serving's own gain: realised promoted plays over "
          "boost_probability * the day's organic plays (the estimate without the forecast's bias)"),
        F("gain_requested_organic", "double", nullable=True,
          doc="extra: decay-weighted boost_probability * organic plays behind serving_response"),
        F("reconciled_planned", "double", nullable=True,
          doc="extra: planned promoted plays of the logs day (its plan)"),
        F("reconciled_realised", "int64", nullable=True, doc="extra: realised promoted plays of the logs day"),
        F("delivery_ratio", "double", nullable=True,
          doc="extra: reconciled_realised / reconciled_planned; null when nothing was planned"),
        F("delivery_miss_days", "int64", nullable=True, doc="extra: consecutive logs days, up to this one, with "
          "|delivery_ratio - 1| > gate_delivery_max_miss (the delivery gate)"),
    ),
    doc="Per (market, promotion surface): the LP's capacity and its shadow price.",
    key=("score_date", "market", "surface"),
)

# Constraint families of the prices table, in the order of docs/design.md §4's LP.
PRICE_CONSTRAINTS = ("capacity", "artist_cap", "licensor_cap", "campaign_floor", "track_cap")

PRICES = Table(
    "prices",
    (
        F("score_date", "date"),
        F("snapshot_id", "string"),
        F("market", "string"),
        F("surface", "string"),
        F("constraint", "string", doc="capacity, artist_cap, licensor_cap, campaign_floor or track_cap"),
        F("key", "string", doc="artist_id, licensor_id, campaign_id or track_id; empty for capacity"),
        F("bound", "double", doc="the constraint's right-hand side: K, phi*K, psi*K, F_c or rho*E"),
        F("slack", "double", doc=">= 0: how far the plan is from the bound (for a floor: sum x + u - F)"),
        F("price", "double", doc=">= 0: the dual value, objective gained per unit the bound is relaxed"),
    ),
    doc="Per (market, promotion surface) LP: the dual price of every constraint over an eligible track.",
    key=("score_date", "market", "surface", "constraint", "key"),
)

DELIVERY_RECONCILIATION = Table(
    "delivery_reconciliation",
    (
        F("score_date", "date", doc="the day whose logs arrived: the score date of the plan reconciled"),
        F("snapshot_id", "string", doc="the snapshot that carries the row (of the day after score_date)"),
        F("track_id", "string"),
        F("market", "string"),
        F("surface", "string"),
        F("planned_promoted_plays", "double", doc="x of the plan for score_date (0 when not planned)"),
        F("boost_probability", "double", doc="what serving read for score_date (0 when not planned)"),
        F("realised_promoted_plays", "int64", doc="promoted plays in score_date's engagement logs"),
        F("ratio", "double", nullable=True, doc="realised / planned; null when nothing was planned"),
        F("campaign_id", "string", nullable=True, doc="extra: the plan's campaign; null when not planned"),
        F("supply_forecast", "double", doc="extra: the plan's E (0 when not planned)"),
        F("organic_plays", "int64", doc="extra: non-promoted plays of score_date (the opportunities)"),
        F("plan_snapshot_id", "string", nullable=True,
          doc="extra: the snapshot whose plan was reconciled; null when none was published"),
    ),
    doc="Per (logs day, track, market, promotion surface): the plan against what serving delivered. Rows "
        "planned (x > 0) or with realised promoted plays.",
    key=("score_date", "track_id", "market", "surface"),
)

CAMPAIGN_LIFT = Table(
    "campaign_lift",
    (
        F("score_date", "date"),
        F("snapshot_id", "string"),
        F("campaign_id", "string"),
        F("market", "string"),
        F("surface", "string", doc="the exposures' promotion surface; 'all' for intent_to_treat rows"),
        F("exposed_listeners_treated", "int64",
          doc="listeners with a treated exposure (intent_to_treat: the treated population)"),
        F("exposed_listeners_holdout", "int64",
          doc="listeners with a ghost exposure (intent_to_treat: the holdout population)"),
        F("lift", "double", doc="streams per listener, treated over holdout, minus 1 (pre-period adjusted)"),
        F("lift_low", "double", doc="95% interval, lower bound"),
        F("lift_high", "double", doc="95% interval, upper bound"),
        F("historical_lift", "double", nullable=True,
          doc="before/after: streams per day after the first selection over the 28 days before, minus 1"),
        F("method", "string", doc="exposures or intent_to_treat"),
        F("licensor_id", "string", doc="extra"),
        F("flight_start", "date", doc="extra"),
        F("flight_end", "date", doc="extra"),
        F("flight_days", "int64", doc="extra: days of the flight up to the last day of logs"),
        F("first_exposure_date", "date", nullable=True, doc="extra: the first selection (null: intent_to_treat)"),
        F("exposed_tracks", "int64", doc="extra: the campaign's tracks with exposures here"),
        F("streams_per_listener_treated", "double", doc="extra"),
        F("streams_per_listener_holdout", "double", doc="extra"),
        F("incremental_streams", "double", doc="extra: treated listeners x (treated - holdout streams per listener)"),
        F("incremental_streams_low", "double", doc="extra: 95% interval"),
        F("incremental_streams_high", "double", doc="extra: 95% interval"),
        F("lift_unadjusted", "double", doc="extra: the plain ratio of means minus 1"),
        F("lift_unadjusted_low", "double", doc="extra: its 95% interval"),
        F("lift_unadjusted_high", "double", doc="extra: its 95% interval"),
        F("new_listeners_treated", "int64", nullable=True, doc="extra: no stream in the 28 days before exposure"),
        F("new_listeners_holdout", "int64", nullable=True, doc="extra"),
        F("saves_treated", "int64", doc="extra: listeners who saved a campaign track in their window"),
        F("saves_holdout", "int64", doc="extra"),
        F("intent_rate_treated", "double", doc="extra: saves / listeners"),
        F("intent_rate_holdout", "double", doc="extra"),
        F("streams_per_day_before", "double", nullable=True, doc="extra: historical baseline"),
        F("streams_per_day_after", "double", nullable=True, doc="extra: historical comparison"),
    ),
    doc="Per (campaign, market, surface): causal lift against the randomised holdout.",
    key=("score_date", "campaign_id", "market", "surface"),
)

SNAPSHOTS = Table(
    "snapshots",
    (
        F("snapshot_id", "string"),
        F("score_date", "date"),
        F("created_at", "timestamp"),
        F("code_version", "string"),
        F("run_fingerprint", "string", doc="sha256 of inputs, config and code"),
        F("promotion_scores_rows", "int64"),
        F("campaign_delivery_rows", "int64"),
        F("capacity_rows", "int64"),
        F("manifest_uri", "string"),
        F("validation", "string", nullable=True,
          doc="the gates' verdict in words: 'all passed', or which failed gates were skipped by hand"),
        F("skipped_gates", "string", nullable=True,
          doc="comma-separated names of the gates skipped with --skip-gate ('' when none)"),
        F("is_current", "bool", nullable=True,
          doc="true for the one snapshot LATEST points to: the *_latest views show it"),
        F("pulled_at", "timestamp", nullable=True,
          doc="when a rollback withdrew this snapshot (its rows leave the tables); null when it was not"),
    ),
    doc="Registry of the snapshots loaded into the warehouse, which one is current, which were pulled. "
        "Columns after manifest_uri are nullable: a registry made by an older OASIS gains them in place.",
    key=("snapshot_id",),
)

FORECAST_ACCURACY = Table(
    "forecast_accuracy",
    (
        F("origin_date", "date", doc="the logs date the forecast was made from (data up to this day)"),
        F("target_date", "date", doc="the day forecast: origin_date + 1"),
        F("backtest_id", "string", doc="the `oasis backtest` run that wrote the row"),
        F("market", "string"),
        F("surface", "string"),
        F("cohort", "string", doc="all, new_enrollee, young_release, established (E), or surface_total (S)"),
        F("method", "string", doc="model, decayed_mean or seasonal_naive"),
        F("rows", "int64", doc="forecasts compared (tracks; 1 for surface_total)"),
        F("forecast", "double", doc="sum of the forecasts"),
        F("actual", "double", doc="sum of the actual plays"),
        F("abs_error", "double", doc="sum of |forecast - actual|"),
        F("wape", "double", nullable=True, doc="abs_error / actual (null when actual = 0)"),
        F("bias", "double", nullable=True, doc="(forecast - actual) / actual (null when actual = 0)"),
        F("interval_coverage", "double", nullable=True,
          doc="share of rows whose actual lies in the 80% interval (model only)"),
    ),
    doc="One-day-ahead forecast accuracy per origin, market, surface, cohort and method (`oasis backtest`).",
    key=("origin_date", "market", "surface", "cohort", "method"),
)

INPUTS = {t.name: t for t in (ENROLLMENTS, ENGAGEMENT, EXPOSURES)}
OUTPUTS = {t.name: t for t in (PROMOTION_SCORES, CAMPAIGN_DELIVERY, CAPACITY, PRICES, DELIVERY_RECONCILIATION,
                                CAMPAIGN_LIFT)}
ALL = {t.name: t for t in (ENROLLMENTS, ENGAGEMENT, EXPOSURES, DAILY_AGGREGATES, SURFACE_TOTALS, LISTENER_DAYS,
                           EXPOSURE_DAYS, MARKET_LISTENERS, DEAD_LETTERS, PROMOTION_SCORES, CAMPAIGN_DELIVERY,
                           CAPACITY, PRICES, DELIVERY_RECONCILIATION, CAMPAIGN_LIFT, SNAPSHOTS, FORECAST_ACCURACY)}
