"""Device models: pure, deterministic generators of the messages a device emits in simulated time."""
