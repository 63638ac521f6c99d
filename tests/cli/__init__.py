"""Tests of meshmedia.cli."""
