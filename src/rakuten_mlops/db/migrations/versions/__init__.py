"""Migration scripts, one per area: 0001 service, 0002 security, 0003 monitoring."""
