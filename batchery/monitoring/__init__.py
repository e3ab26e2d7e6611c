"""Metrics and health signals."""
