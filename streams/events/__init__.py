"""Bytes ↔ records: event validation (schema), decoding and encoding (codec), dead letters."""
