"""Test support shared by unit and integration tests, benchmarks and the demo."""
