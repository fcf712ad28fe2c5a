"""What the API and the event handlers ask for: reads, connections, manual syncs, status, jobs, the tick, webhooks."""
