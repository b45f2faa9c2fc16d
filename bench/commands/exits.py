"""The exit codes of ``bench``."""

from __future__ import annotations

import signal

EXIT_OK, EXIT_FAILED_RUN, EXIT_USAGE = 0, 1, 2
#: 128 + the signal's number, as shells report a process ended by it.
EXIT_SIGINT, EXIT_SIGTERM = 128 + signal.SIGINT, 128 + signal.SIGTERM
