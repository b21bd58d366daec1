"""distill: turn a teacher LLM into SFT training data."""

__version__ = "0.1.0"
