"""What requests used and came to: the request outcome, tokens, the ledger writer and its queries
(``memproxy usage``), and the Prometheus metrics."""
