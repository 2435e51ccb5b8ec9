"""Operator tools over a running bus: dead letters, replay, status."""
