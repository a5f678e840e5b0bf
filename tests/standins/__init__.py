"""Stand-ins for external platforms: real wire protocols on 127.0.0.1, recording every request."""
