"""gradproof test suite."""
