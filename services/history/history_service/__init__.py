"""History service: every user's uploads and results, kept up to date from events."""
