"""genlab.compress."""
