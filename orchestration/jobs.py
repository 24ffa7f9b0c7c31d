import dagster as dg

# Everything, in dependency order: what `make demo` runs (the retrain is the same selection, requested
# by the assets' automation conditions: orchestration/automation.py).
all_assets_job = dg.define_asset_job(
    "all_assets_job",
    selection=dg.AssetSelection.all(),
    description="The whole graph: ingest, clean, split, train, evaluate.",
)
data_job = dg.define_asset_job(
    "data_job",
    selection=dg.AssetSelection.groups("ingest", "clean", "splits"),
    description="Landing files to validated splits and vocabularies.",
)
training_job = dg.define_asset_job(
    "training_job",
    selection=dg.AssetSelection.groups("training"),
    description="Train and evaluate on the current splits.",
)
incremental_item_embedding_job = dg.define_asset_job(
    "incremental_item_embedding_job",
    selection=dg.AssetSelection.assets(
        "raw_items", "clean_items", "item_embeddings", "item_index", "item_semantic_ids"
    ),
    description="New catalog files to the index without retraining: ingest and clean items, embed only "
    "new or changed items with the current checkpoint, upsert them into the index, give them "
    "semantic IDs with the trained tokenizer (the generative retriever can then emit them).",
)
