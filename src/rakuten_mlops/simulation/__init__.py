"""Simulated production traffic against the running service (`simulate traffic`)."""
