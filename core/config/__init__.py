"""Configuration: config.yaml read strictly and validated into frozen dataclasses."""
