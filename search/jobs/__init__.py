"""End-to-end jobs: plain functions that take ``Settings`` and return typed results.

The CLI is a thin wrapper over them: it parses options, calls a job and prints what it returns. The stages
below return JSON-ready dicts (their ``--json`` output); ``search.jobs.results`` reads them once into typed
models, so the roof names fields instead of string keys.
"""
