"""Config resolution: argument > environment > default, typed, with exact errors."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import pytest

from landmark import config as cfg
from landmark.errors import ConfigError
from landmark.matching import PRESETS, MatchConfig
from landmark.settings import Settings


@dataclass(frozen=True)
class Example:
    """Example options."""

    count: int = cfg.setting(3, env="EX_COUNT", help="how many")
    scale: float = cfg.setting(0.5, help="how big")
    flag: bool = cfg.setting(False, env="EX_FLAG", help="on or off")
    sizes: tuple[float, ...] = cfg.setting((1.0, 2.0), help="sizes")
    name: str = cfg.setting("", env="EX_NAME", help="a name")


def test_defaults_when_nothing_is_given() -> None:
    assert cfg.resolve(Example, {}, environ={}) == Example()


def test_environment_beats_default_and_argument_beats_environment() -> None:
    environ = {"EX_COUNT": "7", "EX_FLAG": "yes", "EX_NAME": "env"}
    from_env = cfg.resolve(Example, {}, environ=environ)
    assert (from_env.count, from_env.flag, from_env.name) == (7, True, "env")
    from_arg = cfg.resolve(Example, {"count": "9", "name": None}, environ=environ)
    assert (from_arg.count, from_arg.name) == (9, "env")  # None means "not given"


def test_values_are_coerced_to_the_field_types() -> None:
    config = cfg.resolve(Example, {"scale": "0.25", "sizes": "0.5, 1.5"}, environ={})
    assert config.scale == 0.25 and config.sizes == (0.5, 1.5)


def test_unknown_option_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as error:
        cfg.resolve(Example, {"colour": "red"}, environ={})
    assert str(error.value) == "unknown option 'colour' for Example; valid options: count, scale, flag, sizes, name"


def test_bad_values_name_the_setting() -> None:
    with pytest.raises(ConfigError) as error:
        cfg.resolve(Example, {}, environ={"EX_COUNT": "many"})
    assert str(error.value) == "EX_COUNT: 'many' is not a valid int"
    with pytest.raises(ConfigError) as error:
        cfg.resolve(Example, {"flag": "maybe"}, environ={})
    assert str(error.value) == "flag: 'maybe' is not a boolean (use true or false)"


def test_validate_runs_after_resolution() -> None:
    with pytest.raises(ConfigError) as error:
        cfg.resolve(Settings, {"partition_size": "0"}, environ={})
    assert str(error.value) == "partition_size: must be at least 1, got 0"
    with pytest.raises(ConfigError) as error:
        cfg.resolve(MatchConfig, {"rule": "nearest"}, environ={})
    assert str(error.value) == "rule: 'nearest' is not one of distance, ratio, mutual"


def test_presets_supply_defaults_that_arguments_override() -> None:
    config = cfg.resolve(MatchConfig, {"min_inliers": 12}, environ={}, base=PRESETS["aliked"])
    assert config.rule == "mutual" and config.verification == "affine" and config.min_inliers == 12
    # DELF keeps DELF's own rule and verification.
    assert PRESETS["delf"].rule == "distance" and PRESETS["delf"].max_distance == 0.8
    assert PRESETS["delf"].verification == "affine"
    assert (PRESETS["delf"].ransac_threshold, PRESETS["delf"].ransac_trials) == (20.0, 1000)


def test_settings_read_landmark_environment() -> None:
    settings = cfg.resolve(
        Settings, {}, environ={"LANDMARK_DATABASE_URL": "postgresql://db/x", "LANDMARK_DASK_WORKERS": "3"}
    )
    assert settings.database_url == "postgresql://db/x" and settings.local_workers == 3


def test_cli_options_are_built_from_the_fields() -> None:
    parser = argparse.ArgumentParser()
    cfg.add_options(parser, Example)
    args = parser.parse_args(["--count", "4", "--flag", "--sizes", "3,4"])
    options = cfg.options_from(args, Example)
    assert options == {"count": "4", "scale": None, "flag": True, "sizes": "3,4", "name": None}
    config = cfg.resolve(Example, options, environ={})
    assert (config.count, config.flag, config.sizes) == (4, True, (3.0, 4.0))
    assert "env EX_COUNT" in parser.format_help()
