"""The module the ``commitforge`` entry point names: hook implementations only.

commitforge imports it when its plugin registry is built, then calls every hook
implemented here once with a ``register`` callback.
"""

from core.hookspecs import hookimpl

from commitforge_example.blocks import BlocksChunker, BlocksChunkerConfig


@hookimpl
def register_chunker(register):
    register("blocks", BlocksChunker, BlocksChunkerConfig)
