"""The one user-facing error type.

A :class:`CommitforgeError` is caught at the entry point and printed as a single line
(no traceback) before exiting non-zero. Its message must name the bad value and say
what to do about it. Set ``COMMITFORGE_TRACEBACK=1`` to see the full traceback.
"""


class CommitforgeError(Exception):
    """A problem the user can fix: bad config, bad repository, unknown plugin..."""

    exit_code = 2
