"""Pure training code (no Celery): SFT, DPO / robust DPO losses (the preference pairs are built by tacit.pairs)."""
