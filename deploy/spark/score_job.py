"""`spark-submit` entry point of catalogue scoring (`rakuten-mlops score --engine spark`).

The master, executors and resources are spark-submit's; the arguments are `score`'s:

    spark-submit --master yarn --deploy-mode client --num-executors 10 --executor-cores 16 \\
      --conf spark.executorEnv.RAKUTEN_SPARK_TASK_THREADS=1 \\
      deploy/spark/score_job.py --model models:/rakuten-product-classifier@champion \\
      --input 's3a://catalogue/listings/*.parquet' --output s3a://catalogue/scores/2026-12-01

Executors need the `rakuten_mlops` package and its dependencies: run them from the trainer
image (Spark on Kubernetes: spark.kubernetes.container.image) or ship a packed virtual
environment (`--archives rakuten-venv.tar.gz#venv` with PYSPARK_PYTHON=./venv/bin/python).
"""

import sys

from rakuten_mlops.cli import app

if __name__ == "__main__":
    # An empty master keeps the one spark-submit configured.
    app(["score", "--engine", "spark", "--master", "", *sys.argv[1:]], prog_name="score_job.py")
