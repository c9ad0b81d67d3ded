"""genlab.training."""
