#!/usr/bin/env bash
# Spark GPU discovery script (spark.executor.resource.gpu.discoveryScript, set by
# histoflow.predict.scale.spark_gpu_conf): prints the GPUs of this host as Spark expects,
#   {"name": "gpu", "addresses": ["0", "1"]}
# Spark runs it on every executor host: histoflow must be installed there at the same path.
ADDRS=$(nvidia-smi --query-gpu=index --format=csv,noheader | sed -e ':a' -e 'N' -e '$!ba' -e 's/\n/","/g')
echo "{\"name\": \"gpu\", \"addresses\": [\"$ADDRS\"]}"
