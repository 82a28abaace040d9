"""The prediction wing: predictor, micro-batcher, model manager and model process, recorder."""
