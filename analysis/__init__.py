"""Spectral and expansion analysis of sparse attention patterns."""
