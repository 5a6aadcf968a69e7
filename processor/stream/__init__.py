"""The streaming shell: faust app, agents, HTTP views and Kafka plumbing around the pure core."""
