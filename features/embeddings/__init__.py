"""M3 user embeddings (Tang et al., WWW 2019): one vector per user that mixes short-, mid- and long-range
interest through a context-dependent gate, trained to predict the next consumed block.

Modules, one job each: ``config`` (settings), ``sequences`` (consumed-block histories, no leakage past a
cutoff), ``model`` (the torch M3 module), ``train`` (sampled-softmax training with early stopping on later
days), ``baselines`` (popular / average / K-window), ``evaluate`` (next-block recall@k and MRR),
``persist`` (safetensors + JSON manifest), ``store`` (float16 vectors in Redis) and ``pipeline`` (train,
evaluate, write; refresh active users without retraining).
"""
