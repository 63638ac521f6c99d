"""Tests of meshmedia.store."""
