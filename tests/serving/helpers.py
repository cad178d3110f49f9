"""Helpers shared by the serving tests."""

from __future__ import annotations

from data.contracts import SearchImpression
from features.store import RedisFeatureStore


def impression_of(store: RedisFeatureStore, request_id: str) -> SearchImpression:
    """The impression the server logged for a request, read back from the event stream."""
    for _, fields in store.client.xrevrange(store.keys.events_stream, count=2000):
        if fields[b"kind"] == b"impression":
            imp = SearchImpression.model_validate_json(fields[b"data"])
            if imp.request_id == request_id:
                return imp
    raise AssertionError(f"no impression {request_id} on the stream")
