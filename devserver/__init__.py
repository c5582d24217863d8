"""The development server: serves the demo and simulates a bursty AI server (see serve.py)."""
