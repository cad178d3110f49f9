"""The query pipeline and the ``smartblock`` CLI.

In: a query, a user and the settings. Out: ranked blocks (through the CLI now; the API later).
Kept import-light: importing ``search`` starts no JVM, loads no model and opens no connection.
"""
