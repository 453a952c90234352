"""streamfer: features."""
