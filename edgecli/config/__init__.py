"""The one frozen `Config`, built once per command: defaults < config.toml < environment < CLI flags.

- `model`: the types others code against (`Config`, `FunctionConfig`, `Limits`, `Overrides`) and defaults;
- `source`: config.toml's text, TOML parsing, typed reads whose errors carry file:line;
- `functions`: which functions the project has, and why some are not served;
- `resolve`: single values from their layers (policy, port, secrets, JWT secret, signing keys, env file);
- `keys`: signing keys loaded from their JWKs;
- `load`: `load_config`, which puts them together.

The names below are the package's public face: import them from `edgecli.config`.
"""

from __future__ import annotations

from edgecli.config.functions import FUNCTION_NAME_RE, dependency_file
from edgecli.config.load import load_config
from edgecli.config.model import (
    CPU_COUNT,
    DEFAULT_DB_URL,
    DEFAULT_EVENT_RETENTION,
    DEFAULT_EVENT_RETENTION_MB,
    DEFAULT_HOST,
    DEFAULT_JWT_SECRET,
    DEFAULT_PORT,
    LIMIT_KEYS,
    POLICIES,
    Config,
    FunctionConfig,
    Limits,
    Overrides,
    Policy,
)
from edgecli.config.resolve import (
    ENV_ENV_FILE,
    ENV_HOST,
    ENV_NO_VERIFY_JWT,
    ENV_POLICY,
    ENV_PORT,
    ENV_STATE_DIR,
    env_reference,
)
from edgecli.config.source import parse_toml

__all__ = [
    "CPU_COUNT",
    "DEFAULT_DB_URL",
    "DEFAULT_EVENT_RETENTION",
    "DEFAULT_EVENT_RETENTION_MB",
    "DEFAULT_HOST",
    "DEFAULT_JWT_SECRET",
    "DEFAULT_PORT",
    "ENV_ENV_FILE",
    "ENV_HOST",
    "ENV_NO_VERIFY_JWT",
    "ENV_POLICY",
    "ENV_PORT",
    "ENV_STATE_DIR",
    "FUNCTION_NAME_RE",
    "LIMIT_KEYS",
    "POLICIES",
    "Config",
    "FunctionConfig",
    "Limits",
    "Overrides",
    "Policy",
    "dependency_file",
    "env_reference",
    "load_config",
    "parse_toml",
]
