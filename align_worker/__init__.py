"""Celery workers for SFT / DPO / robust DPO + NLL; built in the alignment issue."""
