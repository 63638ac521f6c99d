"""Tests of meshmedia.engine."""
