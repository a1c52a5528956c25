"""
Connections to backend directory servers: pools and strategies, the upstream links of both modes, health checks, SRV discovery.
"""
