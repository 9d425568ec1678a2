"""What every fake server of the tests shares: it serves from a thread of its own while its
`with` block runs, and is shut and closed after."""

import threading


class ServedInBackground:
    """A socketserver mixin (put it first among the bases): `with Server(...) as s:` serves."""

    # The listen backlog, as a real server's (socketserver's is 5): a burst of connections
    # waits to be accepted instead of being dropped, to retry a second later.
    request_queue_size = 4096

    def __enter__(self):
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.shutdown()
        self.server_close()
