"""streamfer: inference."""
