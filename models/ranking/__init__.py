"""The ranking stage (labels, candidates, the ranker). Light on purpose: the service's settings
and the CLI read the default below without importing torch."""

# The retriever's top N the ranker orders, wherever ranking runs: the CLI's `recommend --rank`,
# the batch assets (RankingConfig.n_candidates: what ranking_candidates trains and
# ranking_evaluation promotes on) and the HTTP service's `rank: true` (ServeConfig.rank_candidates).
# Phoenix retrieves ~1,000 for its feed.
DEFAULT_CANDIDATES = 200
