"""What the SQL stores' parts (conversations, the queue) share: statements written once,
with `?` placeholders, run in the store's own dialect (`store.placeholder`)."""


class SQLPart:
    """A part of a SQL store (SQLite or PostgreSQL) that runs its statements through it."""

    def __init__(self, store):
        self.store = store

    def _run(self, db, statement, params):
        """Run a statement written with ? placeholders, in the store's dialect."""
        return db.execute(statement.replace("?", self.store.placeholder), params)
