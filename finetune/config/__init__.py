"""Argument groups (dataclasses by concern), YAML + command-line parsing, their checks."""
