"""The REST search API (FastAPI): query and user in, ranked blocks out; events in, to the feature stream."""
