"""Admin service: all-user views, moderation and statistics; every action is audited."""
