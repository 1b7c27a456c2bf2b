#!/usr/bin/env bash
# The main job: set up (idempotent, cached) and run the default experiment: the
# standard scenario matrix (`swaplab run`), results under results/<timestamp>/.
# Extra arguments replace the default subcommand, e.g. `scripts/main.sh doctor`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if (($#)); then
    exec ./target/release/swaplab "$@"
fi
exec ./target/release/swaplab run
