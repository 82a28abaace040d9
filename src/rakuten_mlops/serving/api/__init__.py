"""HTTP API of the service: one router module per concern under `routes/`."""
