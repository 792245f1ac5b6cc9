"""LLM-as-judge service; built in the judge issue."""
