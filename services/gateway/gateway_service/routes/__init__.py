"""The public /v1 API, one module per area."""
