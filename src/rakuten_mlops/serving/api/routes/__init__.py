"""Routers: predict, feedback, predictions, model, admin, health."""
