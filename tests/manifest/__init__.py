"""Tests of meshmedia.manifest."""
