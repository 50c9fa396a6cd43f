"""The one config of docs/design.md §4: defaults, strict validation, TOML round trip."""
import dataclasses
import math
import tomllib

import pytest

from pipelines.config import Config, ConfigError, defaults_toml

FIELDS = {f.name: f for f in dataclasses.fields(Config)}


def test_defaults_are_valid_and_documented():
    cfg = Config()
    assert Config.from_mapping({}) == cfg
    # docs/design.md §4 names these parameters; each must have a default and a doc.
    for key in ("window_days", "half_life_days", "skip_penalty", "guardrail_delta", "promoted_share_cap",
                "track_boost_cap", "artist_share_cap", "licensor_share_cap", "floor_fraction",
                "shortfall_penalty_factor", "max_bad_row_share"):
        assert key in FIELDS
        assert FIELDS[key].metadata["doc"]
    # The defaults docs/design.md §3/§4 states in prose.
    assert cfg.window_days == 28
    assert cfg.half_life_days == 14
    assert cfg.min_track_age_days == 30
    assert cfg.min_window_plays == 20


def test_unknown_key_is_an_error_naming_the_key():
    with pytest.raises(ConfigError, match="windw_days") as e:
        Config.from_mapping({"windw_days": 7, "skip_penalty": 2.0}, source="my.toml")
    assert "my.toml" in str(e.value)


@pytest.mark.parametrize("key, value", [
    ("window_days", 0),
    ("window_days", 121),
    ("half_life_days", 0.1),
    ("half_life_days", 400.0),
    ("guardrail_confidence", 0.49),
    ("guardrail_confidence", 1.0),      # upper bound is open
    ("promoted_share_cap", 0.0),        # lower bound is open
    ("promoted_share_cap", 1.01),
    ("track_boost_cap", 0.0),
    ("artist_share_cap", 1.5),
    ("licensor_share_cap", -0.1),
    ("floor_fraction", -0.01),
    ("floor_fraction", 1.01),
    ("pacing_min", 1.1),
    ("pacing_max", 0.9),
    ("shortfall_penalty_factor", 1.5),
    ("max_bad_row_share", 1.5),
    ("event_ts_slack_hours", -1.0),
    ("event_ts_slack_hours", 49.0),
])
def test_out_of_range_value_is_an_error_naming_the_key(key, value):
    with pytest.raises(ConfigError, match=rf"\b{key}\b"):
        Config.from_mapping({key: value}, source="cfg.toml")


NUMERIC = sorted(k for k, f in FIELDS.items() if f.metadata["kind"] is not str)
CHOICES = sorted(k for k, f in FIELDS.items() if f.metadata["kind"] is str)


@pytest.mark.parametrize("key", NUMERIC)
def test_each_bound_is_inclusive_or_exclusive_as_declared(key):
    m = FIELDS[key].metadata
    kind = m["kind"]
    for bound, is_open in ((m["lo"], m["lo_open"]), (m["hi"], m["hi_open"])):
        value = kind(bound)
        extra = {}
        # Keep the min <= max prior strength rule out of the way of this test.
        if key == "min_prior_strength":
            extra["max_prior_strength"] = 1e9
        if key == "max_prior_strength":
            extra["min_prior_strength"] = 0.0
        if key == "guardrail_delta":   # and the reinstate <= pull-back rule
            extra["guardrail_reinstate_delta"] = 0.0
        if key == "guardrail_reinstate_delta":
            extra["guardrail_delta"] = 1.0
        if is_open:
            with pytest.raises(ConfigError, match=key):
                Config.from_mapping({key: value, **extra})
        else:
            assert getattr(Config.from_mapping({key: value, **extra}), key) == value


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_non_finite_values_are_rejected(value):
    with pytest.raises(ConfigError, match="skip_penalty"):
        Config.from_mapping({"skip_penalty": value})


@pytest.mark.parametrize("key, value", [
    ("window_days", "28"),
    ("window_days", 7.5),          # int parameter, not a whole number
    ("window_days", True),         # a bool is not a number here
    ("skip_penalty", [1.0]),
    ("skip_penalty", {"a": 1}),
    ("half_life_days", None),
])
def test_wrong_type_is_rejected(key, value):
    with pytest.raises(ConfigError, match=key):
        Config.from_mapping({key: value})


def test_whole_float_for_int_and_int_for_float_are_coerced():
    cfg = Config.from_mapping({"window_days": 14.0, "half_life_days": 7})
    assert cfg.window_days == 14 and type(cfg.window_days) is int
    assert cfg.half_life_days == 7.0 and type(cfg.half_life_days) is float


@pytest.mark.parametrize("key", CHOICES)
def test_a_choice_takes_only_its_names(key):
    for name in FIELDS[key].metadata["choices"]:
        assert getattr(Config.from_mapping({key: name}), key) == name
    for bad in ("", "Model", 1, None):
        with pytest.raises(ConfigError, match=key):
            Config.from_mapping({key: bad})


def test_reinstate_above_pull_back_threshold_is_rejected():
    """Hysteresis needs the reinstate threshold at or below the pull-back one."""
    with pytest.raises(ConfigError, match="guardrail_reinstate_delta"):
        Config.from_mapping({"guardrail_delta": 0.04, "guardrail_reinstate_delta": 0.05})
    assert Config.from_mapping({"guardrail_delta": 0.04, "guardrail_reinstate_delta": 0.04})


def test_min_prior_strength_above_max_is_rejected():
    with pytest.raises(ConfigError, match="min_prior_strength"):
        Config.from_mapping({"min_prior_strength": 50.0, "max_prior_strength": 10.0})


def test_defaults_toml_parses_back_to_exactly_the_defaults():
    parsed = tomllib.loads(defaults_toml())
    defaults = Config().to_dict()
    assert set(parsed) == set(defaults)
    for key, value in defaults.items():
        assert parsed[key] == value, key
        assert type(parsed[key]) is type(value), key
    assert Config.from_mapping(parsed) == Config()


def test_defaults_toml_documents_every_key():
    text = defaults_toml()
    for name, f in FIELDS.items():
        assert f.metadata["doc"] in text, name


def test_load_reads_a_toml_file(tmp_path):
    path = tmp_path / "oasis.toml"
    path.write_text("# tuned\nwindow_days = 14\nskip_penalty = 2.5\n")
    cfg = Config.load(str(path))
    assert cfg.window_days == 14
    assert cfg.skip_penalty == 2.5
    assert cfg.half_life_days == Config().half_life_days  # untouched keys keep their defaults


def test_load_without_path_gives_defaults():
    assert Config.load(None) == Config()


def test_load_errors_name_the_file_and_key(tmp_path):
    bad_key = tmp_path / "bad_key.toml"
    bad_key.write_text("kappa = 0.2\n")
    with pytest.raises(ConfigError, match="kappa") as e:
        Config.load(str(bad_key))
    assert str(bad_key) in str(e.value)

    bad_value = tmp_path / "bad_value.toml"
    bad_value.write_text("promoted_share_cap = 2.0\n")
    with pytest.raises(ConfigError, match="promoted_share_cap") as e:
        Config.load(str(bad_value))
    assert str(bad_value) in str(e.value)

    not_toml = tmp_path / "not_toml.toml"
    not_toml.write_text("window_days = = 3\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        Config.load(str(not_toml))

    with pytest.raises(ConfigError, match="not found"):
        Config.load(str(tmp_path / "missing.toml"))


def test_sha256_identifies_the_values():
    a, b = Config(), Config()
    assert a.sha256() == b.sha256()
    assert len(a.sha256()) == 64
    changed = Config.from_mapping({"skip_penalty": 1.5})
    assert changed.sha256() != a.sha256()
    back = Config.from_mapping({"skip_penalty": 1.0})
    assert back.sha256() == a.sha256()


def test_config_is_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().window_days = 3
