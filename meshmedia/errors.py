"""The exceptions meshmedia raises; the CLI turns each into a clear message."""

from __future__ import annotations


class MeshmediaError(Exception):
    """Base of every error meshmedia raises on purpose."""


class ConfigError(MeshmediaError):
    """A setting has a value that is not accepted."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{setting}: {message}")
        self.setting = setting


class StoreError(MeshmediaError):
    """The state database cannot be opened or migrated."""


class EngineError(MeshmediaError):
    """The BitTorrent engine refused an operation (bad torrent, unknown info hash...)."""


class ManifestError(MeshmediaError):
    """A manifest (or one of its items) is not valid."""


class PublishError(MeshmediaError):
    """A file cannot be published (empty, outside the share, unreadable...)."""
