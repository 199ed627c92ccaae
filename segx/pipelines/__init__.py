"""Pipelines that wrap a segx model for applications (see docs/roadmap.md)."""
