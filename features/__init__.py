"""streamfer: feature spec, pure reference semantics, and the Redis feature store."""
