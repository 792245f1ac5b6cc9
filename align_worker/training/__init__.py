"""Pure training code (no Celery): preference data, SFT, DPO / robust DPO losses."""
