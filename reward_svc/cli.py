"""`tacit reward ...` subcommands (registered by tacit.cli; heavy imports stay inside the handlers)."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_reward_commands"]


def add_reward_commands(sub: Any) -> None:
    """Add the `reward` command group to the top-level subparsers."""
    reward = sub.add_parser("reward", help="reward models: evaluate, train, predict")
    reward.add_subparsers(dest="action", required=True)
    _ = argparse  # subcommands are added by the reward-model work
