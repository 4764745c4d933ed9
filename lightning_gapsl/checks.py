"""The configuration error and its two checks, imported by `config` and by every
section that validates itself (privacy, the methods) without importing `config`."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key and the valid choices."""


def choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{key}={value!r} is not valid; choose one of: {', '.join(choices)}")


def check(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)
