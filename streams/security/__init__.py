"""Secrets that never print (redaction) and the local stack's throwaway TLS material."""
