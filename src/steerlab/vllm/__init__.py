"""steerlab inside stock vLLM: a general plugin (entry point `vllm.general_plugins` -> `steerlab.vllm.plugin:register`)
that steers per request through `SamplingParams(extra_args={"steering": ...})`, graph-safe.

op.py: the registered torch op; tables.py: the persistent slot tables it reads; slots.py: kit hash -> slot, LRU.
This package imports vLLM only inside the plugin's own modules, so the pure parts test without it.
"""
