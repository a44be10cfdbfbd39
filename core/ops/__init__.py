"""Operations: what the server tells its operator (metrics, logs, refusal summaries)."""
