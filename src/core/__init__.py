"""commitforge core: records, plugin registry, pipeline stages and the run layout."""

__version__ = "0.1.0"

from core.native import install as _install_native

_install_native()  # compiled modules load only when built from the sources on disk (core.native)
