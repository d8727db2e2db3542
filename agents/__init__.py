"""Entry points: the CLI, logging setup and wiring of stores and services."""
