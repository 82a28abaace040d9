"""The review console (`/console`): server-rendered pages over the service's own functions."""
