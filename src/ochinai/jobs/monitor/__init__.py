"""The monitor job: price and stock watch over an HTTP API, exact about what changed."""
