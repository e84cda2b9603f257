"""Objective: loss terms, schedules and constraints (registries)."""
