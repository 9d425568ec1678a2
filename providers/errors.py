"""The few ways a provider call can fail, as plain exceptions.

Providers raise these and know nothing of HTTP responses to the client;
app.py turns each into the OpenAI error envelope in one place. Every message
names the provider and is safe to show a client: it never holds a key.
"""


class ProviderError(Exception):
    """A provider call failed; `message` is safe to show the client."""

    def __init__(self, provider, message):
        super().__init__(message)
        self.provider = provider
        self.message = message


class NotFound(ProviderError):
    """The provider does not know the response id."""


class Rejected(ProviderError):
    """The provider refused the request itself (a 4xx other than 401/403/404/429)."""

    def __init__(self, provider, message, status, param=None, code=None):
        super().__init__(provider, message)
        self.status = status
        self.param = param
        self.code = code


class RateLimited(ProviderError):
    """The provider asked us to slow down; `retry_after` is its header, if any."""

    def __init__(self, provider, message, retry_after=None):
        super().__init__(provider, message)
        self.retry_after = retry_after


class BadGateway(ProviderError):
    """The provider is unreachable, broken, or refused the gateway's own key."""


class GatewayTimeout(BadGateway):
    """The provider accepted the call but did not answer in time."""


class Untranslatable(Exception):
    """The request asks for something the provider's API cannot carry; `param` names it.

    Not a ProviderError: nothing reached the provider. The client gets a 400.
    """

    def __init__(self, message, param):
        super().__init__(message)
        self.message = message
        self.param = param
