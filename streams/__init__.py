"""streamfer: streams."""
