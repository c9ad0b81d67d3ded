"""genlab.tune."""
