"""The serving tests' fixtures (the tiny world's indexes, a promoted LightGBM ranker, features in a real
Redis, apps and live uvicorn servers) live in tests/conftest.py, shared with tests/experiments."""
