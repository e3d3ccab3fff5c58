#!/bin/sh
# The behavioural audit of an anti-refusal vector (the starter refusal vector negated, scale 2) on the default model:
# 24 harmful requests from the full refusal-direction harmful test split, 32 tokens. Writes bench/results/audit/.
set -e
.venv/bin/python -c "import steerlab; (-steerlab.resolve('starter/refusal').entries[0].vector).save('bench/results/audit/anti-refusal.safetensors')"
.venv/bin/python -m steerlab hub audit bench/results/audit/anti-refusal.safetensors:2 --n 24 --max-new-tokens 32 --out bench/results/audit
rm bench/results/audit/anti-refusal.safetensors
