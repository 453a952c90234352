"""ops/dashboard"""
