# Evaluation bench (issue 3): the seed suite, steering vs prompting vs few-shot vs LoRA on the shared datasets.
.PHONY: bench-seed bench-seed-quick

bench-seed-quick: setup
	$(VENV)/bin/steerlab bench --suite seed --quick --out bench/results/seed-quick

bench-seed: setup
	$(VENV)/bin/steerlab bench --suite seed --out bench/results/seed

# Held-out CAA behaviours (corrigibility, hallucination, coordination): trained vs mean-diff steering, as CAA measured.
.PHONY: bench-caa
bench-caa: setup
	$(VENV)/bin/steerlab bench --suite caa --methods mean_diff,preference --out bench/results/caa
