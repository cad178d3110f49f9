"""Rankers: a request's candidate blocks and their features in, one score per block out.

Linear, MLP, DCN-V2, DASALC (torch) and LightGBM LambdaMART share one protocol (fit / score / save / load),
trained offline from implicit feedback.
"""
