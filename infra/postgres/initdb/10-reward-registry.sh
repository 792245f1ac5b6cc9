#!/bin/sh
# First start of the PostgreSQL volume: a second database for reward_svc's model registry.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -c "CREATE DATABASE tacit_reward OWNER \"$POSTGRES_USER\""
