import dagster as dg

# Everything, in dependency order: what `make demo` and the retrain schedule run.
all_assets_job = dg.define_asset_job("all_assets_job", selection=dg.AssetSelection.all(),
                                     description="Ingest, clean, split and build vocabularies.")
data_job = dg.define_asset_job("data_job", selection=dg.AssetSelection.groups("ingest", "clean", "splits"),
                               description="Landing files to validated splits and vocabularies.")
