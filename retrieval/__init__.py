"""Hybrid block retrieval: a query in, ~100-200 candidate blocks out, with per-retriever scores.

Retrievers share one protocol (``search(query, k) -> list[Hit]``): SPLADE on a Lucene impact index, dense
FAISS, behavioural candidates from the click logs, and their fusion.
"""
