"""genlab.finetune."""
