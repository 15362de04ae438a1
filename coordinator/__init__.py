"""The coordinator: Flower ServerApp, strategy, run store and round logic."""
