"""The model: one module per kernel file it mirrors."""
