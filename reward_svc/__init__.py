"""Reward models (scikit-learn), their registry and scoring; built in the reward-model issue."""
