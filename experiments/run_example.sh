#!/usr/bin/env bash
# The example A/B test end to end, in one command, on the world `smartblock quickstart --no-serve` set up:
# train and promote the DASALC line the config names (once), serve the config, archive the events, play the
# world's users against the API over HTTP, then analyze.
#
#   experiments/run_example.sh [WORLD=worlds/small] [USERS=2000] [MINUTES=10] [PORT=8000] [OUT=worlds/ab-example]
#
# Variables override the defaults, e.g. `MINUTES=2 USERS=500 experiments/run_example.sh`. Outputs in OUT:
# simulation.json (the simulator's report, with the true utility of each variant's pages), events/ (the
# archived impressions and interactions), analysis.json and ab.png.
set -euo pipefail
cd "$(dirname "$0")/.."
WORLD=${WORLD:-worlds/small}
USERS=${USERS:-2000}
MINUTES=${MINUTES:-10}
PORT=${PORT:-8000}
OUT=${OUT:-worlds/ab-example}
CONFIG=${CONFIG:-experiments/example.yaml}
SEED=${SEED:-0}

[ -f "$WORLD/world.json" ] || { echo "no world in $WORLD: run smartblock quickstart --no-serve first" >&2; exit 2; }
mkdir -p "$OUT"

# 1. Every ranker the config names must be servable: train and promote the DASALC line when it has no model.
if ! smartblock models list --line dasalc --json 2>/dev/null | python -c \
    'import json, sys; sys.exit(not any(r.get("current") for r in json.load(sys.stdin).get("dasalc", [])))' 2>/dev/null; then
  version=$(smartblock train ranker --model dasalc --world "$WORLD" --line dasalc --json | python -c 'import json,sys; print(json.load(sys.stdin)["version"])')
  smartblock models promote dasalc "$version" --force
fi
smartblock experiment validate "$CONFIG"

# 2. Archive what the stream held before this run elsewhere, so the analysis sees this run's events only.
smartblock events export --out "$OUT/before" --json > /dev/null

# 3. Serve the config and archive its events as they come.
smartblock serve --world "$WORLD" --port "$PORT" --experiments "$CONFIG" --log-level warning &
server=$!
smartblock events export --out "$OUT/events" --follow &
exporter=$!
trap 'kill -INT $exporter 2>/dev/null || true; kill $server 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do curl -sf "http://127.0.0.1:$PORT/readyz" > /dev/null && break; sleep 2; done

# 4. Play the world's users; clicks and dwell go back to /events, so the live features learn as it runs.
smartblock simulate traffic --world "$WORLD" --url "http://127.0.0.1:$PORT" --users "$USERS" \
  --minutes "$MINUTES" --seed "$SEED" --json > "$OUT/simulation.json"

# 5. Stop archiving (it writes what it holds), take the last events, analyze.
kill -INT $exporter && wait $exporter || true
smartblock events export --out "$OUT/events" --json > /dev/null
smartblock experiment analyze --config "$CONFIG" --events "$OUT/events" --plot "$OUT/ab.png"
smartblock experiment analyze --config "$CONFIG" --events "$OUT/events" --json > "$OUT/analysis.json"
echo "results in $OUT: simulation.json analysis.json ab.png"
