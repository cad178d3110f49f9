"""The serving-time half of A/B experiments: the config file's one definition, user assignment, and
team-draft interleaving.

In: an experiment config (``experiments/*.yaml``) and a request's user id. Out: the request's treatment
(variant, ranker, settings overrides) and, for interleaved pages, each block's team. The analysis half
(online statistics, offline estimates, closed-loop traffic) lives in ``search.experiments``.
"""
