"""What is replayed against the model: layouts, traces, costs, scenarios, replay."""
