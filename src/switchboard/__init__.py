"""Switchboard: an AI router."""

__version__ = "0.1.0"
