"""Inference shared by batch prediction and the prediction service: model input in, contract out."""
