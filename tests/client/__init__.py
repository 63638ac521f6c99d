"""Tests of meshmedia.client."""
