"""Task distributions."""
