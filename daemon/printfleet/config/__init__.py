"""The configuration: one TOML file, ``PRINTFLEET_*`` environment overrides, secret files.

- :mod:`~printfleet.config.schema`: the pydantic models (every key, its default and meaning).
- :mod:`~printfleet.config.loader`: TOML + environment overlay + path rules → ``Settings``.
- :mod:`~printfleet.config.explain`: validation errors → problems with a fix.
- :mod:`~printfleet.config.secrets`: the one secret-file reader and ``secrets.json`` parser.
- :mod:`~printfleet.config.toml_lines`: which line of a TOML document a key is on.

The schema names and the loader's entry points are re-exported here, so the rest of printfleet
writes ``from printfleet.config import Settings, load_settings``.
"""

from printfleet.config.loader import CREDENTIALS_ENV, config_path, load_settings
from printfleet.config.schema import (
    DEFAULT_BASE_URLS,
    DaemonConfig,
    Duration,
    LimitsConfig,
    MetricsConfig,
    MqttConfig,
    PollConfig,
    ReceiverConfig,
    RulesConfig,
    Section,
    Settings,
    SourceConfig,
    ThresholdsConfig,
)
from printfleet.config.secrets import read_secret

__all__ = [
    "CREDENTIALS_ENV",
    "DEFAULT_BASE_URLS",
    "DaemonConfig",
    "Duration",
    "LimitsConfig",
    "MetricsConfig",
    "MqttConfig",
    "PollConfig",
    "ReceiverConfig",
    "RulesConfig",
    "Section",
    "Settings",
    "SourceConfig",
    "ThresholdsConfig",
    "config_path",
    "load_settings",
    "read_secret",
]
