"""Command-line interface: one command group per job."""
