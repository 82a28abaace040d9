"""Catalogue scoring: re-score many listings with the pyfunc model, in one process or on Spark.

`catalogue.py` reads the inputs (CSV or Parquet in the official X layout) and turns a chunk
into output rows with the same functions as batch prediction (`rakuten_mlops.inference`);
`local.py` streams the chunks in this process; `spark.py` runs the same code on a Spark
cluster, the model loaded once per executor Python worker.
"""
