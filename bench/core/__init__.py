"""What the verbs share: the Lightning modules and their data, the run directory, metrics, memory and latency."""
