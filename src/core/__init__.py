"""commitforge core: records, plugin registry, pipeline stages and the run layout."""

__version__ = "0.1.0"
