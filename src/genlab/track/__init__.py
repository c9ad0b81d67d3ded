"""genlab.track."""
