"""Upload service: takes an image, validates and normalises it, stores it, queues its restoration."""
