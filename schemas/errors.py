"""The project's one root exception, so callers can catch everything we raise."""

__all__ = ["ConfigError", "FraudError", "StoreError"]


class FraudError(Exception):
    """Root of every error this project raises on purpose."""


class ConfigError(FraudError, ValueError):
    """A setting or CLI argument is invalid; the message names the field."""


class StoreError(FraudError):
    """ClickHouse could not be reached or refused a statement; the message names the table/URL."""
