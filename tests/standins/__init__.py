"""Stand-ins for external platforms: real wire protocols on 127.0.0.1, recording every request."""

PLATFORM_LISTEN_BACKLOG = 4096
"""The stand-ins' listen backlog (the kernel caps it at `net.core.somaxconn`). A platform's servers take every
connection a burst opens; with aiohttp's default (128) the kernel dropped handshakes when a bot under load
(bench/load.py) opened hundreds at once, and each drop cost that request a second (TCP's SYN retransmission) that
the real platform would not have added."""
