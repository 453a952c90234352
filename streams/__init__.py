"""streamfer: Kafka-side services (worker, learner), operator tools, the local stack and the CLI."""
