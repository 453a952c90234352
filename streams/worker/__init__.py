"""`streamfer run`: the wiring (pipeline), the pure scoring core, consume, deliver, supervise."""
