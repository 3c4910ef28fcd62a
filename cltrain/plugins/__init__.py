"""Plugins (Lightning callbacks), one file each, enabled by `plugins.<name>` in the experiment config."""
from cltrain.plugins import facilitation, replay  # noqa: F401  (registration)
from cltrain.plugins.base import PLUGINS, Plugin, PluginContext

__all__ = ["PLUGINS", "Plugin", "PluginContext"]
from cltrain.plugins import detection, probe, pruning  # noqa: F401,E402  (registration)
