"""Infrastructure: the one input reader, worker processes."""
