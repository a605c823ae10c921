"""Persona: personalization and ranking platform for a multi-app retail bank."""
