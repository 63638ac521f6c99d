"""System tests: many hosts on a real network in namespaces (need root)."""
