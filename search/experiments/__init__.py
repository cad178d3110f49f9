"""A/B experiments: config files, user assignment, team-draft interleaving, online analysis and offline
(counterfactual) estimates, and the closed-loop traffic simulation.

In: an experiment config (``experiments/*.yaml``) and the event log (impressions tagged with experiment,
variant, ranker version and interleaving teams). Out: per-request treatments for the server; per-variant
metrics with confidence intervals, lifts and checks for the analyst.
"""
