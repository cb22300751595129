"""cli."""

import signal
import sys

# An ingest worker process (multiprocessing "spawn") imports the command's main module first, which
# takes a second. Ctrl-C in a terminal reaches the whole process group: a worker must not die of it
# with a KeyboardInterrupt traceback while it starts. Ignored before that import; the supervisor
# stops its workers with SIGTERM (ingest/supervisor.py, which ignores SIGINT in them as well).
if "--multiprocessing-fork" in sys.argv:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
