"""Every tunable parameter of the scoring and allocation, with its default,
its bounds and what it means: the one config file of DESIGN §4.

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


class ConfigError(OasisError, ValueError):
    """A config file that cannot be used; the message names the key."""


@dataclass(frozen=True)
class Config:
    # --- signals --------------------------------------------------------
    window_days: int = _p(28, 1, 120, "trailing window of engagement days used for signals", kind=int)
    half_life_days: float = _p(14.0, 0.5, 365.0, "exponential decay half-life of a day's signals")
    # --- estimation -----------------------------------------------------
    skip_penalty: float = _p(1.0, 0.0, 100.0, "lambda: weight of the skip-rate lift against the save-rate lift")
    min_prior_strength: float = _p(5.0, 0.0, 1e6, "lower clip of the empirical-Bayes prior strength (alpha+beta)")
    max_prior_strength: float = _p(2000.0, 1.0, 1e9, "upper clip of the empirical-Bayes prior strength (alpha+beta)")
    # --- eligibility ----------------------------------------------------
    guardrail_delta: float = _p(0.05, 0.0, 1.0, "delta: skip rate above baseline+delta is disliked")
    guardrail_confidence: float = _p(0.9, 0.5, 1.0, "posterior probability needed to call a track disliked",
                                     hi_open=True)
    min_track_age_days: int = _p(30, 0, 3650, "tracks released fewer days before the score date are ineligible", kind=int)
    min_window_plays: int = _p(20, 0, 10**9, "plays on promotion surfaces in the window needed to be eligible", kind=int)
    # --- allocation -----------------------------------------------------
    promoted_share_cap: float = _p(0.10, 0.0, 1.0, "kappa: capacity K = kappa * forecast total plays S", lo_open=True)
    track_boost_cap: float = _p(0.5, 0.0, 1.0, "rho: a track gets at most rho * E promoted plays", lo_open=True)
    artist_share_cap: float = _p(0.25, 0.0, 1.0, "phi: one artist gets at most phi * K", lo_open=True)
    licensor_share_cap: float = _p(0.40, 0.0, 1.0, "psi: one licensor gets at most psi * K", lo_open=True)
    floor_fraction: float = _p(0.2, 0.0, 1.0, "a campaign's daily floor as a fraction of its maximal boost")
    pacing_min: float = _p(0.5, 0.0, 1.0, "lowest pacing multiplier (well ahead of pace)")
    pacing_max: float = _p(2.0, 1.0, 10.0, "highest pacing multiplier (well behind pace)")
    shortfall_penalty_factor: float = _p(
        10.0, 2.0, 1e6, "p = factor * (max |v| + 1e-6) per (market, surface): large enough that floors "
        "are met wherever they can be (factor >= 2 suffices)")
    # --- holdout and campaign lift (pipelines/holdout.py, pipelines/lift) ---
    holdout_share: float = _p(0.05, 0.0, 0.5, "share of each (market, month)'s listeners held out of promotion")
    holdout_salt: int = _p(
        7_919_104_729, 0, 2**63 - 1, "salt of the holdout hash of (salt, user_id, market, month); serving uses the "
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
    # --- publish gates (jobs/gates; `oasis run --skip-gate NAME` overrides one) ---
    gate_max_row_drop: float = _p(
        0.5, 0.0, 1.0, "row_count gate: a table may lose at most this fraction of the rows it had in the "
        "previous snapshot (1 disables)")
    gate_min_eligible_share: float = _p(
        0.05, 0.0, 1.0, "eligible_share gate: at least this share of enrolled rows must be eligible "
        "(sample days: 0.15-0.40; a world's first day, with one day of history, ~0.02)")
    gate_max_eligible_share: float = _p(
        0.99, 0.0, 1.0, "eligible_share gate: at most this share of enrolled rows may be eligible "
        "(all eligible suggests broken guardrails)")
    gate_max_score_psi: float = _p(
        0.25, 0.0, 100.0, "score_drift gate: largest population stability index of eligible scores against "
        "the previous snapshot (10 bins on [0, 1], +0.5 per bin); >0.25 is the usual 'major shift' line, "
        "sample days measure 0.002-0.09")
    gate_min_capacity_use: float = _p(
        0.0, 0.0, 1.0, "capacity_use gate: sum of planned_total over sum of capacity must be at least this "
        "(0 disables)")

    def __post_init__(self):
        for f in dataclasses.fields(self):
            _check(f, getattr(self, f.name))
        if self.min_prior_strength > self.max_prior_strength:
            raise ConfigError("min_prior_strength must not exceed max_prior_strength")

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
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ConfigError(f"{source}: {k} must be a number, got {v!r}")
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
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: not valid TOML: {e}") from None
        except (IsADirectoryError, NotADirectoryError, PermissionError) as e:
            raise ConfigError(f"config file cannot be read: {path}: {e.strerror or e}") from None
        return cls.from_mapping(values, source=path)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()


def _check(f: dataclasses.Field, v) -> None:
    m = f.metadata
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
        lb = "(" if m["lo_open"] else "["
        rb = ")" if m["hi_open"] else "]"
        lines.append(f"# {m['doc']}; range {lb}{m['lo']}, {m['hi']}{rb}")
        lines.append(f"{f.name} = {f.default!r}")
        lines.append("")
    return "\n".join(lines)
