"""Every tunable parameter of the scoring and allocation, with its default,
its bounds and what it means: the one config file of docs/design.md §4.

A run's config is these defaults overridden by a TOML file (`--config FILE`).
Unknown keys and out-of-range values are errors that name the key; the
resolved values are written into every snapshot manifest.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import tomllib
from dataclasses import dataclass, field

from pipelines import storage
from pipelines.errors import OasisError


def _p(default, lo, hi, doc, *, lo_open=False, hi_open=False, kind=float):
    return field(default=default, metadata=dict(lo=lo, hi=hi, lo_open=lo_open, hi_open=hi_open,
                                                 doc=doc, kind=kind))


def _choice(default: str, choices: tuple[str, ...], doc: str):
    """A parameter that takes one of a few names."""
    return field(default=default, metadata=dict(choices=choices, doc=doc, kind=str))


class ConfigError(OasisError, ValueError):
    """A config file that cannot be used; the message names the key."""


@dataclass(frozen=True)
class Config:
    # --- signals --------------------------------------------------------
    window_days: int = _p(28, 1, 120, "trailing window of engagement days used for signals", kind=int)
    half_life_days: float = _p(14.0, 0.5, 365.0, "exponential decay half-life of a day's signals")
    # --- supply forecasts (pipelines/scoring/forecast.py) ------------------
    forecast_method: str = _choice(
        "model", ("model", "decayed_mean"),
        "supply forecasts E and S: model (decayed level with weekday factors, a damped per-track trend and "
        "an 80% interval) or decayed_mean (the decay-weighted mean of the observed window days, no interval)")
    forecast_damping: float = _p(0.9, 0.0, 1.0, "phi: the share of a track's or surface's fitted daily trend "
                                 "carried into the one-day-ahead forecast")
    track_cap_basis: str = _choice(
        "point", ("point", "lower"),
        "what the per-track cap rho * E uses: point (the forecast) or lower (the low end of its 80% interval, "
        "so a track is rarely promoted beyond rho times what it turns out to play)")
    # --- estimation -----------------------------------------------------
    skip_penalty: float = _p(1.0, 0.0, 100.0, "lambda: weight of the skip-rate lift against the save-rate lift")
    min_prior_strength: float = _p(5.0, 0.0, 1e6, "lower clip of the empirical-Bayes prior strength (alpha+beta)")
    max_prior_strength: float = _p(2000.0, 1.0, 1e9, "upper clip of the empirical-Bayes prior strength (alpha+beta)")
    # --- eligibility ----------------------------------------------------
    guardrail_delta: float = _p(0.05, 0.0, 1.0, "delta: skip rate above baseline+delta is disliked")
    guardrail_confidence: float = _p(0.9, 0.5, 1.0, "posterior probability above which a track is pulled back "
                                     "(called disliked)", hi_open=True)
    guardrail_reinstate_delta: float = _p(
        0.02, 0.0, 1.0, "hysteresis: a track pulled back in the previous snapshot is reinstated only when its "
        "skip rate is no longer confidently above baseline + this (at most guardrail_delta; the promoted test "
        "lowers its delta by the same margin)")
    promoted_guardrail_delta: float = _p(
        0.05, 0.0, 1.0, "a track is pulled back when the skip rate of its promoted plays is confidently above "
        "that of its organic plays + this")
    min_track_age_days: int = _p(30, 0, 3650, "tracks released fewer days before the score date are ineligible",
                                 kind=int)
    min_window_plays: int = _p(20, 0, 10**9, "plays on promotion surfaces in the window needed to be eligible",
                               kind=int)
    # --- allocation -----------------------------------------------------
    promoted_share_cap: float = _p(
        0.05, 0.0, 1.0, "kappa: capacity K = kappa * forecast total plays S (promotion is scarce: on the `make run` "
        "world the eligible tracks' caps rho*E add up to 5-6% of S in its largest market, so 0.05 binds there and "
        "0.10 bound nowhere)", lo_open=True)
    track_boost_cap: float = _p(0.5, 0.0, 1.0, "rho: a track gets at most rho * E promoted plays", lo_open=True)
    artist_share_cap: float = _p(0.25, 0.0, 1.0, "phi: one artist gets at most phi * K", lo_open=True)
    licensor_share_cap: float = _p(0.40, 0.0, 1.0, "psi: one licensor gets at most psi * K", lo_open=True)
    floor_fraction: float = _p(0.2, 0.0, 1.0, "a campaign's daily floor as a fraction of its maximal boost")
    pacing_min: float = _p(0.5, 0.0, 1.0, "lowest pacing multiplier (well ahead of pace)")
    pacing_max: float = _p(2.0, 1.0, 10.0, "highest pacing multiplier (well behind pace)")
    shortfall_penalty_factor: float = _p(
        10.0, 2.0, 1e6, "p = factor * (max |v| + 1e-6) per (market, surface): large enough that floors "
        "are met wherever they can be (factor >= 2 suffices)")
    # --- serving gain (pipelines/scoring/delivery.py) ---------------------
    calibrate_serving_gain: int = _p(
        1, 0, 1, "1: boost probabilities divide by the calibrated serving gain g-hat of their (market, surface); "
        "0: g-hat = 1 (the estimate is still computed and published as serving_gain_estimate)", kind=int)
    gain_half_life_days: float = _p(
        2.0, 0.25, 60.0, "half-life, in reconciled days, of a day's weight in the serving-gain estimate")
    gain_prior_plays: float = _p(
        10.0, 0.0, 1e9, "the estimate is shrunk toward 1 by this many requested plays at gain 1, so a new "
        "market or surface starts at 1 and moves as its plays come in")
    gain_min: float = _p(0.2, 0.01, 1.0, "lower clamp of the serving-gain estimate")
    gain_max: float = _p(5.0, 1.0, 100.0, "upper clamp of the serving-gain estimate")
    # --- holdout and campaign lift (pipelines/holdout.py, pipelines/lift) ---
    holdout_share: float = _p(0.05, 0.0, 0.5, "share of each (market, month)'s listeners held out of promotion")
    holdout_salt: int = _p(
        7_919_104_729, 0, 2**53, "salt of the holdout hash of (salt, user_id, market, month); serving uses the "
        "same value (both are recorded in the manifest); changing it reshuffles the holdout", kind=int)
    lift_window_days: int = _p(14, 1, 60, "attribution window: the exposure day (from the first exposure on) and "
                               "the days after it, in all this many days", kind=int)
    lift_pre_days: int = _p(28, 1, 90, "days before the first exposure (new listeners, the pre-period "
                            "adjustment) and before the first selection (historical_lift)", kind=int)
    lift_min_flight_days: int = _p(10, 1, 62, "a campaign_lift row appears once this many days of the flight "
                                   "are in the logs", kind=int)
    lift_min_listeners: int = _p(100, 2, 10**9, "a campaign_lift row needs this many exposed listeners in each "
                                 "arm", kind=int)
    lift_min_holdout_streams: int = _p(20, 1, 10**9, "a campaign_lift row needs this many streams in the "
                                       "holdout arm (the ratio's denominator) and one in the treated arm", kind=int)
    # --- data quality ---------------------------------------------------
    max_bad_row_share: float = _p(0.01, 0.0, 1.0, "a run fails without publishing above this share of bad rows")
    event_ts_slack_hours: float = _p(6.0, 0.0, 48.0, "an event may start this long outside its partition day")
    # --- serving ----------------------------------------------------------
    serving_max_age_days: int = _p(
        2, 0, 365, "a snapshot may be served until its score date + this many days (its manifest's valid_until); "
        "older, the serving reader and `oasis serving sync` refuse it", kind=int)
    max_missing_days: int = _p(
        2, 0, 120, "a run fails when more window days than this have no engagement rows (no partition, or one "
        "whose files hold 0 rows) after the window's first day with rows; the logs day itself must have rows",
        kind=int)
    dedupe_lookback_days: int = _p(
        1, 0, 7, "an event whose event_id was seen on one of this many days before its own counts once, on the "
        "first of them (0: repeats count once within their day only)", kind=int)
    # --- publish gates (jobs/gates; `oasis run --skip-gate NAME` overrides one) ---
    gate_max_row_drop: float = _p(
        0.5, 0.0, 1.0, "row_count gate: a table may lose at most this fraction of the rows it had in the "
        "previous snapshot (1 disables)")
    gate_min_eligible_share: float = _p(
        0.05, 0.0, 1.0, "eligible_share gate: at least this share of enrolled rows must be eligible "
        "(measured: 0.49-0.55 on the days of the `make run` world; a world's first day, with one day of history, "
        "~0.02)")
    gate_max_eligible_share: float = _p(
        0.99, 0.0, 1.0, "eligible_share gate: at most this share of enrolled rows may be eligible "
        "(all eligible suggests broken guardrails)")
    gate_max_score_psi: float = _p(
        0.25, 0.0, 100.0, "score_drift gate: largest population stability index of eligible scores against "
        "the previous snapshot, over the rows eligible in both with an unchanged enrollment (10 bins on [0, 1], "
        "+0.5 per bin); >0.25 is the usual 'major shift' line; the days of the `make run` world measure 0.002-0.04")
    gate_min_capacity_use: float = _p(
        0.0, 0.0, 1.0, "capacity_use gate: sum of planned_total over sum of capacity must be at least this "
        "(0 disables)")
    gate_delivery_max_miss: float = _p(
        0.15, 0.0, 10.0, "delivery gate: a (market, surface) misses a day when |realised / planned - 1| of its "
        "promoted plays exceeds this (simulated days measure 0.01-0.05 when calibrated)")
    gate_delivery_days: int = _p(
        2, 1, 365, "delivery gate: fires when a (market, surface) misses this many consecutive days", kind=int)
    gate_delivery_min_planned: float = _p(
        200.0, 0.0, 1e12, "delivery gate: a (market, surface) day with fewer planned promoted plays is not "
        "judged (at 200, Poisson noise alone moves the ratio by 7%)")
    gate_delivery_blocks: int = _p(
        0, 0, 1, "delivery gate: 0 warns (the run publishes and says so), 1 fails the run like the other gates "
        "(`--skip-gate delivery` overrides)", kind=int)

    def __post_init__(self):
        for f in dataclasses.fields(self):
            _check(f, getattr(self, f.name))
        if self.min_prior_strength > self.max_prior_strength:
            raise ConfigError("min_prior_strength must not exceed max_prior_strength")
        if self.guardrail_reinstate_delta > self.guardrail_delta:
            raise ConfigError("guardrail_reinstate_delta must not exceed guardrail_delta")

    # --------------------------------------------------------------------
    @classmethod
    def from_mapping(cls, values: dict, source: str = "config") -> "Config":
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(known)}")
        coerced = {}
        for k, v in values.items():
            kind = known[k].metadata["kind"]
            if kind is str:
                if not isinstance(v, str):
                    raise ConfigError(f"{source}: {k} must be one of {', '.join(known[k].metadata['choices'])}, "
                                      f"got {v!r}")
                coerced[k] = v
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ConfigError(f"{source}: {k} must be a number, got {str(v)[:60]!r}")
            if isinstance(v, float) and not math.isfinite(v):
                raise ConfigError(f"{source}: {k} must be finite, got {v}")
            if isinstance(v, int) and abs(v) > 2**53:  # TOML allows any integer; none of ours is near this
                raise ConfigError(f"{source}: {k}={str(v)[:30]}... is out of range: {known[k].metadata['doc']}")
            if kind is int and not float(v).is_integer():
                raise ConfigError(f"{source}: {k} must be a whole number, got {v!r}")
            coerced[k] = kind(v)
        try:
            return cls(**coerced)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None

    @classmethod
    def load(cls, path: str | None) -> "Config":
        if not path:
            return cls()
        try:
            values = tomllib.loads(storage.read_bytes(path).decode("utf-8"))  # local or gs://
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError) as e:
            raise ConfigError(f"{path}: not valid TOML: {str(e)[:200]}") from None
        except OSError as e:
            raise ConfigError(f"config file cannot be read: {path}: {e.strerror or e}") from None
        return cls.from_mapping(values, source=path)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()


def _check(f: dataclasses.Field, v) -> None:
    m = f.metadata
    if m["kind"] is str:
        if v not in m["choices"]:
            raise ConfigError(f"{f.name}={v!r} is not one of {', '.join(m['choices'])}: {m['doc']}")
        return
    if isinstance(v, float) and not math.isfinite(v):
        raise ConfigError(f"{f.name} must be finite, got {v}")
    lo_bad = v <= m["lo"] if m["lo_open"] else v < m["lo"]
    hi_bad = v >= m["hi"] if m["hi_open"] else v > m["hi"]
    if lo_bad or hi_bad:
        lb = "(" if m["lo_open"] else "["
        rb = ")" if m["hi_open"] else "]"
        raise ConfigError(f"{f.name}={v} is out of range {lb}{m['lo']}, {m['hi']}{rb}: {m['doc']}")


def defaults_toml() -> str:
    """The documented default config, as a TOML file a user can copy and edit."""
    lines = ["# OASIS scoring config: every key, its default and its range.", ""]
    for f in dataclasses.fields(Config):
        m = f.metadata
        if m["kind"] is str:
            lines.append(f"# {m['doc']}; one of {', '.join(m['choices'])}")
            lines.append(f'{f.name} = "{f.default}"')
            lines.append("")
            continue
        lb = "(" if m["lo_open"] else "["
        rb = ")" if m["hi_open"] else "]"
        lines.append(f"# {m['doc']}; range {lb}{m['lo']}, {m['hi']}{rb}")
        lines.append(f"{f.name} = {f.default!r}")
        lines.append("")
    return "\n".join(lines)
