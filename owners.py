"""Whose response is whose: the owner id each gateway key's responses are stored under.

The store keeps, with each response, an owner id derived from the key that made
it, never the key. The id is an HMAC of the key under the gateway's secret
(GATEWAY_SECRET, or one the store keeps apart from its data; config.py), so a
copy of the store or of Redis does not let anyone test guesses of a key offline.

While a secret is rotated, GATEWAY_SECRET lists the new one first and the old
ones after it: new responses are stored under the first, and a key still sees
what it made under any of them. It also sees what it made under the unkeyed
digest of releases before this one (sha256 of a prefix and the key), until
those entries expire. Nothing here knows Flask.
"""

import hashlib
import hmac
from typing import NamedTuple

PREFIX = b"gateway response owner\0"


class Owner(NamedTuple):
    """A gateway key, as the store knows it."""

    id: str  # what a response it makes is stored under
    ids: frozenset  # every id its responses may carry: `id`, and those of older secrets

    @classmethod
    def of(cls, key, secrets):
        """The Owner for `key` under `secrets` (the first keys new responses; none: the
        unkeyed digest, as every release before keyed ones wrote)."""
        ids = [hmac.new(secret, PREFIX + key.encode(), hashlib.sha256).hexdigest()
               for secret in secrets]
        ids.append(hashlib.sha256(PREFIX + key.encode()).hexdigest())
        return cls(ids[0], frozenset(ids))


def sees(owner, stored):
    """Whether a caller may see a response stored under the owner id `stored`: its own,
    or one made by no key in particular (None). A caller `owner` None sees every
    response (RESPONSE_SCOPE=shared, or no authentication)."""
    return owner is None or stored is None or stored in owner.ids


def stored_as(owner):
    """The owner id a caller's new responses are stored under (None: no one's)."""
    return owner.id if owner is not None else None
