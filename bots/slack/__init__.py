"""The Slack adapter (slack-bolt): `/imagine`, mentions, DMs and Block Kit buttons, over HTTP or Socket Mode."""
