"""Switchboard: an AI router."""
