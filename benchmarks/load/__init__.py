"""Load and chaos runs against a private platform: Locust users, faults, reconciliation, plots."""
