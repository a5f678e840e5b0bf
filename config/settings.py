"""One typed settings object, built once in the entry point and passed in.

Layers, later wins: `config/default.toml` (beside this module), a file from `--config` or `IMAGINE_CONFIG`,
then environment variables `IMAGINE_<SECTION>__<KEY>` (lists and tables from the environment are JSON).
Every value is checked against its declared type; an unknown key or a bad value raises `ConfigError` naming the
key (and the environment variable, when that is where it came from).
"""

from __future__ import annotations

import json
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from config.errors import ConfigError

DEFAULT_FILE = Path(__file__).with_name("default.toml")
ENV_PREFIX = "IMAGINE_"


@dataclass(frozen=True)
class EngineSettings:
    model: str = "builtin:tiny"
    cache_dir: str = "~/.cache/imagine"
    device: str = "auto"
    dtype: str = "auto"
    steps: int = 4
    max_steps: int = 50
    guidance_scale: float = 5.0
    images_per_prompt: int = 4
    base_size: int = 1280
    max_batch_images: int = 8
    queue_size: int = 100
    job_timeout_s: float = 600.0
    max_prompt_chars: int = 1000
    output_dir: str = "var/images"
    postprocess_threads: int = 0
    """0: auto, one per usable CPU core but one, from 2 to 8 (engine/worker/batches.py)."""
    jpeg_quality: int = 90
    queue: str = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "imagine"
    frontend_id: str = ""
    heartbeat_s: float = 2.0
    reclaim_after_heartbeats: int = 3
    max_deliveries: int = 3
    jobs_per_user: int = 1
    # Speed settings of the loaded pipeline (engine/worker/fast_paths.py says what "auto" is per device kind).
    attention: str = "auto"
    channels_last: str = "auto"
    vae_dtype: str = "auto"
    vae_slicing: str = "auto"
    vae_tiling: str = "auto"
    compile_unet: str = "auto"
    pad_batches: str = "auto"
    pinned_transfer: str = "auto"


@dataclass(frozen=True)
class StoreSettings:
    url: str = "sqlite:///var/imagine.db"


@dataclass(frozen=True)
class ProvenanceSettings:
    label_text: str = "Imagined with AI"
    watermark: bool = True
    metadata: bool = True
    c2pa: bool = True
    c2pa_cert: str = ""
    c2pa_key: str = ""


@dataclass(frozen=True)
class ModerationSettings:
    enabled: bool = True
    embedding: bool = True
    embedding_runtime: str = "onnx"
    image_screening: bool = True
    policy_file: str = ""
    withheld_image: str = "blur"
    strikes_to_ban: int = 3
    strike_window_s: float = 86400.0
    ban_duration_s: float = 86400.0
    review_expiry_s: float = 86400.0
    admin_user_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class LimitSettings:
    prompts_per_window: int = 5
    window_s: float = 600.0
    burst: int = 2
    server_prompts_per_window: int = 60
    max_queued_per_user: int = 2
    daily_quota: int = 100


@dataclass(frozen=True)
class DiscordSettings:
    token: str = ""
    api_base: str = "https://discord.com/api/v10"
    gateway_url: str = ""
    moderator_channel_id: int = 0
    moderator_role_ids: list[int] = field(default_factory=list)
    guild_ids: list[int] = field(default_factory=list)
    client_id: str = ""
    """OAuth2 application id, for moderators signing in to the dashboard with Discord (with client_secret)."""
    client_secret: str = ""
    oauth_authorize_url: str = "https://discord.com/oauth2/authorize"


@dataclass(frozen=True)
class SlackSettings:
    bot_token: str = ""
    signing_secret: str = ""
    app_token: str = ""
    mode: str = "http"
    api_base: str = "https://slack.com/api/"
    host: str = "0.0.0.0"
    port: int = 3000
    moderator_channel_id: str = ""
    moderator_user_ids: list[str] = field(default_factory=list)
    moderator_usergroup_id: str = ""
    client_id: str = ""
    """The Slack app's client id, for moderators signing in to the dashboard with Slack (with client_secret)."""
    client_secret: str = ""
    oidc_authorize_url: str = "https://slack.com/openid/connect/authorize"


@dataclass(frozen=True)
class WebSettings:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 8080
    """0: any free port (tests); the log says which."""
    public_url: str = ""
    """Where browsers reach the pages (e.g. https://imagine.example.org behind a TLS proxy): the one origin a
    state-changing request may come from, and https here marks the session cookie Secure. Empty: the request's
    own scheme and host."""
    session_secret: str = ""
    """A Fernet key (secret: from the environment) encrypting the session cookie; empty: one made per process,
    so sessions end with it."""
    session_max_age_s: float = 2592000.0
    playground: bool = True
    """The playground at `/` (bots/web/playground.py): a front door like Discord and Slack."""


@dataclass(frozen=True)
class DashboardSettings:
    """The moderators' dashboard at /mod (bots/web/mod/)."""

    enabled: bool = True
    session_max_age_s: float = 28800.0
    """A moderator signs in again after this long, however active the browser session is."""
    sign_in_attempts: int = 10
    """Sign-in attempts per client address (and per local account name) within sign_in_window_s."""
    sign_in_window_s: float = 300.0


@dataclass(frozen=True)
class ServiceSettings:
    shutdown_timeout_s: float = 30.0
    """From SIGTERM to exit: queued work is finished while it fits, then running jobs are handed back."""
    delivery_give_up_s: float = 86400.0
    """A result whose posts have failed for this long is given up: its requester is told, by DM if need be."""


@dataclass(frozen=True)
class ImagePromptSettings:
    """Image prompts (img2img): the input's limits and where downloads may come from (README "Image prompts")."""

    default_strength: float = 0.7
    """How much of the input image is redrawn when the user does not say (0.1–1.0)."""
    max_bytes: int = 10_000_000
    max_pixels: int = 16_777_216
    """Checked from the image's header before it is decoded (4096²)."""
    download_timeout_s: float = 20.0
    input_dir: str = ""
    """Where checked input images are stored for the workers; empty: `<engine.output_dir>/inputs`."""
    discord_file_origins: list[str] = field(
        default_factory=lambda: ["https://cdn.discordapp.com", "https://media.discordapp.net"]
    )
    slack_file_origins: list[str] = field(default_factory=lambda: ["https://files.slack.com"])


@dataclass(frozen=True)
class StylePreset:
    """A style preset (`[styles.NAME]`): the user's prompt goes into `prompt` at `{prompt}`; `negative` is added
    to the user's negative prompt; `steps` and `guidance` (0: the engine's default) replace the defaults."""

    prompt: str = "{prompt}"
    negative: str = ""
    steps: int = 0
    guidance: float = 0.0
    description: str = ""


STYLE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
"""A preset's name: what users type (`style:oil-painting`), so short, lower case, no spaces."""


@dataclass(frozen=True)
class LogSettings:
    format: str = "text"
    level: str = "info"


@dataclass(frozen=True)
class Settings:
    engine: EngineSettings = field(default_factory=EngineSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    provenance: ProvenanceSettings = field(default_factory=ProvenanceSettings)
    moderation: ModerationSettings = field(default_factory=ModerationSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    discord: DiscordSettings = field(default_factory=DiscordSettings)
    slack: SlackSettings = field(default_factory=SlackSettings)
    web: WebSettings = field(default_factory=WebSettings)
    dashboard: DashboardSettings = field(default_factory=DashboardSettings)
    service: ServiceSettings = field(default_factory=ServiceSettings)
    log: LogSettings = field(default_factory=LogSettings)
    image_prompts: ImagePromptSettings = field(default_factory=ImagePromptSettings)
    styles: dict[str, StylePreset] = field(default_factory=dict)
    """Style presets by name (`[styles.NAME]` tables; from the environment IMAGINE_STYLES__NAME='{JSON}')."""


# Values that are known before any section is built: allowed choices for string keys.
CHOICES: dict[str, tuple[str, ...]] = {
    "engine.queue": ("memory", "redis"),
    "engine.device": ("auto", "cpu", "cuda", "mps"),
    "engine.dtype": ("auto", "float32", "float16", "bfloat16"),
    "engine.attention": ("auto", "sdpa", "eager"),
    "engine.channels_last": ("auto", "on", "off"),
    "engine.vae_dtype": ("auto", "float32", "float16", "bfloat16"),
    "engine.vae_slicing": ("auto", "on", "off"),
    "engine.vae_tiling": ("auto", "on", "off"),
    "engine.compile_unet": ("auto", "off", "default", "reduce-overhead", "max-autotune-no-cudagraphs"),
    "engine.pad_batches": ("auto", "on", "off"),
    "engine.pinned_transfer": ("auto", "on", "off"),
    "slack.mode": ("http", "socket"),
    "moderation.withheld_image": ("blur", "placeholder"),
    "moderation.embedding_runtime": ("onnx", "torch"),
    "log.format": ("text", "json"),
    "log.level": ("debug", "info", "warning", "error"),
}
POSITIVE: set[str] = {
    "engine.steps",
    "engine.max_steps",
    "engine.images_per_prompt",
    "engine.base_size",
    "engine.max_batch_images",
    "engine.queue_size",
    "engine.job_timeout_s",
    "engine.max_prompt_chars",
    "engine.heartbeat_s",
    "engine.reclaim_after_heartbeats",
    "engine.max_deliveries",
    "engine.jobs_per_user",
    "limits.prompts_per_window",
    "limits.window_s",
    "limits.burst",
    "limits.server_prompts_per_window",
    "limits.max_queued_per_user",
    "limits.daily_quota",
    "moderation.strikes_to_ban",
    "service.shutdown_timeout_s",
    "dashboard.session_max_age_s",
    "dashboard.sign_in_attempts",
    "dashboard.sign_in_window_s",
    "service.delivery_give_up_s",
    "image_prompts.max_bytes",
    "image_prompts.max_pixels",
    "image_prompts.download_timeout_s",
    "web.session_max_age_s",
}
BETWEEN: dict[str, tuple[float, float]] = {"image_prompts.default_strength": (0.1, 1.0)}


NON_NEGATIVE: set[str] = {"engine.postprocess_threads"}
"""0 means "auto" for these."""


def load_settings(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Build the settings: defaults file, then `path` (or $IMAGINE_CONFIG), then the environment."""
    env = os.environ if env is None else env
    raw: dict[str, dict[str, tuple[Any, str]]] = {}
    _merge_file(raw, DEFAULT_FILE)
    user_file = path or env.get(ENV_PREFIX + "CONFIG")
    if user_file:
        _merge_file(raw, Path(user_file))
    _merge_env(raw, env)
    return _build(raw)


def _merge_file(raw: dict[str, dict[str, tuple[Any, str]]], path: Path) -> None:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    for section, table in data.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: top-level key {section!r} must be a [section] table")
        for key, value in table.items():
            raw.setdefault(section, {})[key] = (value, f"{path} [{section}] {key}")


def _merge_env(raw: dict[str, dict[str, tuple[Any, str]]], env: Mapping[str, str]) -> None:
    for name, text in env.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX + "CONFIG" or "__" not in name:
            continue
        section, _, key = name[len(ENV_PREFIX) :].lower().partition("__")
        raw.setdefault(section, {})[key] = (text, f"environment variable {name}")


def _build(raw: dict[str, dict[str, tuple[Any, str]]]) -> Settings:
    sections = {f.name: f.type for f in fields(Settings)}
    hints = typing.get_type_hints(Settings)
    built: dict[str, Any] = {}
    for section, values in raw.items():
        if section not in sections:
            where = next(iter(values.values()))[1]
            raise ConfigError(f"unknown config section {section!r} (from {where}); known: {', '.join(sections)}")
        if section == "styles":
            built[section] = {name: _build_style(name, value, where) for name, (value, where) in values.items()}
        else:
            built[section] = _build_section(section, hints[section], values)
    return Settings(**built)


def _build_style(name: str, value: Any, where: str) -> StylePreset:
    """One `[styles.NAME]` table: a known name shape, known keys, and a template that uses the prompt once."""
    if not STYLE_NAME.match(name):
        raise ConfigError(f"invalid style name {name!r} (from {where}): use 1-32 of a-z, 0-9, - and _")
    if isinstance(value, str):  # from the environment: JSON
        try:
            value = json.loads(value)
        except ValueError:
            raise ConfigError(f"invalid value for styles.{name} (from {where}): not a JSON object") from None
    if not isinstance(value, dict):
        raise ConfigError(f"invalid value for styles.{name} (from {where}): expected a table")
    preset = _build_section(f"styles.{name}", StylePreset, {key: (item, where) for key, item in value.items()})
    if preset.prompt.count("{prompt}") != 1:
        raise ConfigError(f"invalid value for styles.{name}.prompt (from {where}): must contain {{prompt}} once")
    if preset.steps < 0 or preset.guidance < 0:
        raise ConfigError(f"invalid value for styles.{name} (from {where}): steps and guidance must be >= 0")
    return preset


def _build_section(section: str, cls: type, values: dict[str, tuple[Any, str]]) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, (value, where) in values.items():
        if key not in hints:
            raise ConfigError(f"unknown config key {section}.{key} (from {where}); known keys: {', '.join(hints)}")
        kwargs[key] = _check(f"{section}.{key}", hints[key], value, where)
    return cls(**kwargs)


def _check(name: str, hint: Any, value: Any, where: str) -> Any:
    try:
        converted = _convert(hint, value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid value for {name} (from {where}): {value!r}: {exc}") from None
    if name in CHOICES and converted not in CHOICES[name]:
        raise ConfigError(
            f"invalid value for {name} (from {where}): {value!r}; choose one of {', '.join(CHOICES[name])}"
        )
    if name in POSITIVE and converted <= 0:
        raise ConfigError(f"invalid value for {name} (from {where}): {value!r}; must be greater than 0")
    if name in BETWEEN and not BETWEEN[name][0] <= converted <= BETWEEN[name][1]:
        low, high = BETWEEN[name]
        raise ConfigError(f"invalid value for {name} (from {where}): {value!r}; must be from {low:g} to {high:g}")
    if name in NON_NEGATIVE and converted < 0:
        raise ConfigError(f"invalid value for {name} (from {where}): {value!r}; must be 0 (auto) or more")
    return converted


def _convert(hint: Any, value: Any) -> Any:
    """Coerce a TOML value or an environment string to `hint`; raise ValueError/TypeError when it won't go."""
    origin = typing.get_origin(hint)
    if origin in (list, types.GenericAlias) or origin is list:
        if isinstance(value, str):
            value = json.loads(value) if value.strip() else []
        if not isinstance(value, list):
            raise TypeError("expected a list (from the environment: JSON, e.g. '[1, 2]')")
        (item,) = typing.get_args(hint)
        return [_convert(item, v) for v in value]
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.strip().lower() in ("0", "false", "no", "off", ""):
            return False
        raise TypeError("expected true or false")
    if hint is int:
        if isinstance(value, bool) or isinstance(value, float):
            raise TypeError("expected an integer")
        return int(value)
    if hint is float:
        if isinstance(value, bool):
            raise TypeError("expected a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise TypeError("expected a string")
        return value
    raise TypeError(f"unsupported setting type {hint}")
