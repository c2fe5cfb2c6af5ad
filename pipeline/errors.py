"""The two ways a command ends early on purpose, as exception classes.

- :class:`UserError`: something the user can fix (a config typo, a missing
  data set, a bad basis file, a store made with other settings, a scheduler
  that cannot be reached).  The commands print its message, one sentence
  that names the file or the key, and exit with status 2.
- :class:`RunStopped`: a run that ended unfinished for a stated reason
  (``--strict`` met a bad image).  One sentence, exit status 1.

Anything else that escapes a stage is a bug or a failure of the runtime:
exit status 1, and ``-v`` shows the traceback (:mod:`pipeline.cli`).  Each
stage module subclasses :class:`UserError` for its own errors, so the
commands never catch a broad ``ValueError`` that a bug could also raise.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem in what the user gave (file, config, data, address): exit status 2."""


class RunStopped(Exception):
    """The run stopped unfinished for the reason in the message: exit status 1."""
