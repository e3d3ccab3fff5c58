"""python -m steerlab."""

from steerlab.cli.app import main

# Guarded: vLLM (serve --engine vllm) starts its engine by spawning, which imports this module again in the child.
if __name__ == "__main__":
    main()
