"""Persona's Feast feature repository (definitions.py; repo.py binds it for the feast CLI)."""
