"""`python -m bench --patch old-records=<this file>`: streamfer-1w with the feature script of
8e37a89, the commit before the packed replay records (an A/B in one run). Needs the git
history; the drain has no replays, so that script's HGET is never sent."""

import subprocess

from bench.workload import REPO
from features.redis_store import RedisFeatureStore

RedisFeatureStore.SCRIPT = subprocess.run(
    ["git", "show", "8e37a89:features/features.lua"],
    cwd=REPO,
    capture_output=True,
    text=True,
    check=True,
).stdout
