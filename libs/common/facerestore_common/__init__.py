"""Code shared by two or more face restoration services. Never imports a service."""
