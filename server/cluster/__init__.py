"""Several server nodes acting as one site: shared state in Redis, media between nodes."""
