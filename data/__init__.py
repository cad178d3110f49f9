"""Data contracts, their on-disk schemas and loaders, and the world simulator.

In: files (Parquet or JSONL) written by a portal's logging or by ``data.world``.
Out: validated pydantic records or Arrow tables; malformed input raises ``DataError`` naming file, line/row
and field.
"""
