"""Every way a provider's stream may reach the gateway, as fakes on 127.0.0.1.

A route is a framing of the stream (chunked, close-delimited, Content-Length)
over a transport: plain HTTP, TLS (a CA of the tests' own, trusted through
REQUESTS_CA_BUNDLE), an HTTP forward proxy (plain http:// URLs) or a CONNECT
tunnel through it (https:// URLs). A proxied route names its origin
`localhost`, and NO_PROXY=127.0.0.1 keeps the other routes direct, so one
gateway's environment serves every route at once.
"""

import ssl

import trustme

from fake_proxy import FakeProxy
from fake_streaming import FRAMINGS, FakeStreamingProvider

TRANSPORTS = ("http", "tls", "proxy", "connect")  # proxy: absolute-form; connect: a tunnel
# Every framing over every transport.
ROUTES = [f"{framing}-{transport}" for transport in TRANSPORTS for framing in FRAMINGS]


class Routes:
    """The fakes behind every route, started on first use; stop() ends them all."""

    def __init__(self, folder):
        self.ca = trustme.CA()
        self.ca_bundle = folder / "test-ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_bundle))
        self.server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)  # 127.0.0.1, localhost
        self.ca.issue_cert("127.0.0.1", "localhost").configure_cert(self.server_tls)
        self.proxy = FakeProxy().__enter__()
        self._fakes = {}

    def fake(self, route):
        """The fake provider that serves `route`."""
        framing, transport = route.split("-")
        tls = transport in ("tls", "connect")
        if (framing, tls) not in self._fakes:
            fake = FakeStreamingProvider(framing, tls=self.server_tls if tls else None)
            self._fakes[framing, tls] = fake.__enter__()
        return self._fakes[framing, tls]

    def base_url(self, route):
        """The base URL a provider on `route` is configured with."""
        proxied = route.endswith(("-proxy", "-connect"))
        return self.fake(route).url("localhost" if proxied else "127.0.0.1")

    def env(self):
        """The environment that sends each route's calls the way its name says."""
        return {"HTTP_PROXY": self.proxy.url, "HTTPS_PROXY": self.proxy.url,
                "NO_PROXY": "127.0.0.1", "REQUESTS_CA_BUNDLE": str(self.ca_bundle)}

    def stop(self):
        for fake in self._fakes.values():
            fake.__exit__(None, None, None)
        self.proxy.__exit__(None, None, None)
