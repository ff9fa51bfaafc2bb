"""API gateway: the only public entry to the platform."""
