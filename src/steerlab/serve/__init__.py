"""Serving: an OpenAI-compatible HTTP API with per-request steering, batched across requests, and a slider page."""
