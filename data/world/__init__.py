"""The world simulator: a search portal's catalogue, users and logs with known ground truth.

In: a scale (tiny | small | large) and a seed. Out: a world folder holding the data contracts (docs, blocks,
day-partitioned impressions and interactions) plus ``truth/`` (graded relevance and users' latent
preferences), which only evaluation may read. Same scale and seed, same bytes.
"""
