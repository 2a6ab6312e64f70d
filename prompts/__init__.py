"""Shipped prompt files (package data)."""
