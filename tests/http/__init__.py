"""Tests of meshmedia.http."""
