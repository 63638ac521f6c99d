"""Tests of meshmedia.jellyfin."""
