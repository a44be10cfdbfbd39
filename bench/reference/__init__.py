"""Reference servers the benchmark compares ours with: small standalone scripts."""
