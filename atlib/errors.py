"""The error every config check raises: below every module that checks a config (the spec, the methods)."""


class ConfigError(ValueError):
    """A bad value in a config, reported before any compute is spent."""
