"""Fleet-wide machinery shared by all workers: rate limits, batched reads, the region observers."""
