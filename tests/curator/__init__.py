"""Tests of meshmedia.curator."""
