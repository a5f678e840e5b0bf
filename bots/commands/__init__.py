"""One module per `imagine` subcommand; each exposes `register(subparsers)`, setting `func` on its parser.

`func(args, settings_loader) -> int` returns the exit code. Settings are loaded lazily through
`settings_loader()` so that commands needing none (e.g. `verify` on files) stay fast.
"""
