"""An HTTP forward proxy on 127.0.0.1, for tests of provider calls that go through one.

It serves both ways a client uses a proxy:

- CONNECT host:port (an https:// URL): it opens a tunnel and relays bytes both
  ways, TLS and all, for as long as both ends keep it open;
- an absolute-form request (`POST http://host:port/path HTTP/1.1`, an http://
  URL): it forwards the request to the origin and relays the answer as it
  comes, one request a connection, with `Connection: close` added to the
  answer's head so the client does not reuse it.

Either way, when one end closes, it closes the other, as real proxies do: a
client that hangs up on the proxy reaches the origin. `seen` records each
(method, target) it was asked for. With `tls`, it is an HTTPS proxy: the client speaks TLS
to it, and through a tunnel, TLS inside that TLS.
"""

import selectors
import socket
import socketserver
from urllib.parse import urlsplit

from serving import ServedInBackground

HEAD_END = b"\r\n\r\n"


class FakeProxy(ServedInBackground, socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, tls=None):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.seen, self.tls = [], tls  # tls: a server-side SSLContext, for an HTTPS proxy

    @property
    def url(self):
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.server_address[1]}"

    def finish_request(self, request, client_address):
        """Speak TLS to the client first, if an HTTPS proxy (in the request's own thread)."""
        if self.tls:
            request = self.tls.wrap_socket(request, server_side=True)
        super().finish_request(request, client_address)

    def handle_error(self, request, client_address):
        pass  # a client or origin that hangs up mid-relay is what the tests do on purpose



class _Handler(socketserver.BaseRequestHandler):
    def handle(self):
        head, rest = _read_head(self.request)
        if head is None:
            return
        method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
        self.server.seen.append((method, target))
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            with socket.create_connection((host, int(port)), timeout=10) as origin:
                self.request.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                _relay(self.request, origin, rest)
            return
        url = urlsplit(target)
        lines = head.split(b"\r\n")[1:]
        length = next((int(line.split(b":", 1)[1]) for line in lines
                       if line.lower().startswith(b"content-length:")), 0)
        while len(rest) < length:  # the whole body first: the origin answers only after it
            chunk = self.request.recv(65536)
            if not chunk:
                return
            rest += chunk
        kept = [line for line in lines if not line.lower().startswith((b"proxy-", b"connection:"))]
        path = url.path + (f"?{url.query}" if url.query else "")
        request = b"\r\n".join([f"{method} {path} HTTP/1.1".encode(), *kept,
                                b"Connection: close"]) + HEAD_END
        with socket.create_connection((url.hostname, url.port or 80), timeout=10) as origin:
            origin.sendall(request + rest)
            answer, body = _read_head(origin)
            if answer is None:
                return
            self.request.sendall(answer + b"\r\nConnection: close" + HEAD_END + body)
            _relay(self.request, origin, b"")


def _read_head(sock):
    """(the head up to its blank line, without it; the bytes read past it), or (None, b"")."""
    data = b""
    while HEAD_END not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None, b""
        data += chunk
    head, _, rest = data.partition(HEAD_END)
    return head, rest


def _relay(client, origin, pending):
    """Copy bytes both ways until either end closes or fails; then both are closed."""
    origin.sendall(pending)
    client.settimeout(None)
    origin.settimeout(None)
    peers = {client: origin, origin: client}
    with selectors.DefaultSelector() as selector:
        for sock in peers:
            selector.register(sock, selectors.EVENT_READ)
        while True:
            for key, _ in selector.select():
                try:
                    data = key.fileobj.recv(65536)
                    while getattr(key.fileobj, "pending", lambda: 0)():  # TLS: decrypted, unread
                        data += key.fileobj.recv(65536)
                    if data:
                        peers[key.fileobj].sendall(data)
                except OSError:
                    data = b""
                if not data:
                    for sock in peers:
                        try:
                            sock.shutdown(socket.SHUT_RDWR)
                        except OSError:
                            pass
                    return
