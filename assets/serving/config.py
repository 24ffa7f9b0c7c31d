"""The serving group's Dagster configs, derived from the library's dataclasses (models/index/,
models/retrieval/settings.py): the defaults and their reasons live there once."""

import dagster as dg

from assets._config import config_from, without
from models.index.item_index import IndexSpec
from models.index.settings import EmbeddingRefresh, IndexRefresh
from models.retrieval.settings import RecommendationSettings

EmbeddingConfig: type[dg.Config] = config_from("EmbeddingConfig", EmbeddingRefresh)
# item_index and its recall check read the same config (recall_threshold, recall_sample)
IndexConfig: type[dg.Config] = config_from(
    "IndexConfig",
    without(
        IndexSpec,
        ef_construction="HNSW build breadth: HNSW only on request, at FAISS's usual setting",
        nlist="IVF cells: 4 * sqrt(items), the FAISS rule of thumb",
        ivf_min_train="IVF k-means sample size: a memory bound",
    ),
    IndexRefresh,
)
RecommendationConfig: type[dg.Config] = config_from("RecommendationConfig", RecommendationSettings)
