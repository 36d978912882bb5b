"""Shared by tests/ and bench/ (not shipped in the wheel): free ports, test images, `genview` processes."""
