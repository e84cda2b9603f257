"""The optimisable state and the forward model on a batch."""
