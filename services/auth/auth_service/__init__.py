"""Auth service: one-time codes by SMS, JWT access tokens, refresh tokens, users."""
