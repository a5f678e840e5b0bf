"""Process-wide settings for a process that serves chat: `imagine serve` (and the ack benchmarks, which measure
what it runs) call `tune_for_serving()` once the service has started. Not `Service` itself: a test process starts
hundreds of services, and these settings are the process's, like its logging.

Both keep acknowledgements from waiting on things that have nothing to do with them (bench/load.py, issue 17.2):

- GIL hand-over after 0.5 ms (Python's default: 5 ms). The database's threads (aiosqlite's, and the one that
  stores what an acknowledgement waits on) let go of the GIL for every SQLite step and then wait that long for it
  to come back from a busy event loop, each time: an INSERT … RETURNING of 100 rows beside a busy thread took
  37 ms at 5 ms and 1 ms at 0.5 ms. Switching more often costs the loop microseconds.
- What start-up built (models, libraries, settings: millions of objects that live as long as the process) left
  out of the garbage collector's full passes (`gc.freeze()`). Each full pass walked all of them with the event
  loop stopped: 300–340 ms, a few times a minute under load (measured with `gc.callbacks`), 13–30 ms once frozen.
  Objects made later are collected as before; garbage left by start-up itself stays (a few MB at most).

And one setting for every socket it listens on (the Slack endpoint, the web server), `LISTEN_BACKLOG`.
"""

from __future__ import annotations

import gc
import sys

THREAD_SWITCH_INTERVAL_S = 0.0005
LISTEN_BACKLOG = 1024
"""Connections the kernel holds for the server before it accepts them (aiohttp's default: 128; the kernel caps it
at `net.core.somaxconn`, 4096 on current Linux). When a burst of requests opens more connections than that while
the event loop is busy, the kernel drops the surplus handshakes and each client tries again after a second (TCP's
first SYN retransmission; the next one after three): 36 of 500 commands sent at once took 1,010 ms where the rest
took under 260 (`nstat` counted 36 TcpExtListenOverflows). For Slack a second retry is past its 3 s deadline."""


def tune_for_serving() -> None:
    sys.setswitchinterval(min(sys.getswitchinterval(), THREAD_SWITCH_INTERVAL_S))
    gc.freeze()
