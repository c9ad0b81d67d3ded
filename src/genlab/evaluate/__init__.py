"""genlab.evaluate."""
