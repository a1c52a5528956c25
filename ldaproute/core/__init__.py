"""
Decisions without I/O: sessions, routing, rewriting, fan-out, DNs, policy and limits.
"""
