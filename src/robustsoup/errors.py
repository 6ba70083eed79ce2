"""The errors every layer may raise, below all of them (:mod:`robustsoup.config` re-exports :class:`ConfigError`)."""


class ConfigError(ValueError):
    """A configuration that does not match the schema or is inconsistent."""
