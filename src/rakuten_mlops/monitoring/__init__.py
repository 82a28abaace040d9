"""Monitoring: drift of production data, online quality, Prometheus export."""
