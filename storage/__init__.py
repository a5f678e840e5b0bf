"""One storage layer for every table the service keeps: jobs, moderation, intake, deliveries.

    database = await Database.open(settings.store.url)     # sqlite:///... or postgresql://...; migrates
    async with database.write() as connection: ...          # one transaction that takes the write lock at once
    await database.close()

`tables.py` describes every table (SQLAlchemy Core); `migrations/` holds the Alembic revisions that create them;
`deliveries.py` keeps who is posting which finished job. Stores (engine/store.py, moderation/, bots/intake.py)
are given an open `Database` and never open one behind their caller's back.
"""
