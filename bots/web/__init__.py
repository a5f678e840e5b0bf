"""The service's own HTTP server (`web.host:web.port`): operations endpoints today (`ops.py`), and the room where
the playground and the moderators' dashboard will mount their routes on the same aiohttp application."""
