"""The feature store on Redis: feature definitions declared once, computed offline for training sets (as of
each request's time) and served online for a request's candidate blocks, updated live from an event stream.
"""
