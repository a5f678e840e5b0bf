"""Configuration: defaults, a user file, environment overrides, and clear errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.settings import ConfigError, load_settings


def test_defaults_match_the_design() -> None:
    settings = load_settings(env={})
    assert settings.engine.model == "builtin:tiny"
    assert settings.engine.images_per_prompt == 4 and settings.engine.base_size == 1280
    assert settings.discord.api_base == "https://discord.com/api/v10"
    assert settings.slack.api_base == "https://slack.com/api/"
    assert settings.limits.prompts_per_window == 5 and settings.limits.max_queued_per_user == 2


def test_environment_overrides_every_type() -> None:
    settings = load_settings(
        env={
            "IMAGINE_ENGINE__STEPS": "8",
            "IMAGINE_ENGINE__GUIDANCE_SCALE": "7.5",
            "IMAGINE_MODERATION__EMBEDDING": "false",
            "IMAGINE_SLACK__SIGNING_SECRET": "s3cret",
            "IMAGINE_DISCORD__MODERATOR_ROLE_IDS": "[123, 456]",
        }
    )
    assert settings.engine.steps == 8
    assert settings.engine.guidance_scale == 7.5
    assert settings.moderation.embedding is False
    assert settings.slack.signing_secret == "s3cret"
    assert settings.discord.moderator_role_ids == [123, 456]


def test_file_then_environment(tmp_path: Path) -> None:
    config = tmp_path / "imagine.toml"
    config.write_text('[engine]\nsteps = 12\nmodel = "/models/sd"\n[web]\nport = 9000\n')
    settings = load_settings(env={"IMAGINE_CONFIG": str(config), "IMAGINE_ENGINE__STEPS": "3"})
    assert (settings.engine.steps, settings.engine.model, settings.web.port) == (3, "/models/sd", 9000)
    assert load_settings(config, env={}).engine.steps == 12


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"IMAGINE_ENGINE__STEPZ": "8"}, "unknown config key engine.stepz (from environment variable"),
        ({"IMAGINE_ENGNE__STEPS": "8"}, "unknown config section 'engne'"),
        (
            {"IMAGINE_ENGINE__STEPS": "many"},
            "invalid value for engine.steps (from environment variable IMAGINE_ENGINE__STEPS): 'many'",
        ),
        ({"IMAGINE_ENGINE__STEPS": "0"}, "engine.steps .* must be greater than 0"),
        ({"IMAGINE_ENGINE__QUEUE": "kafka"}, "engine.queue .* choose one of memory, redis"),
        ({"IMAGINE_DISCORD__MODERATOR_ROLE_IDS": "123"}, "discord.moderator_role_ids .* expected a list"),
        ({"IMAGINE_MODERATION__EMBEDDING": "maybe"}, "moderation.embedding .* expected true or false"),
    ],
)
def test_bad_values_name_the_key(env: dict[str, str], message: str) -> None:
    with pytest.raises(
        ConfigError, match=message.replace("(", r"\(").replace(")", r"\)") if ".*" not in message else message
    ):
        load_settings(env=env)


def test_bad_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[engine\nsteps = ")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(broken, env={})
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "missing.toml", env={})
