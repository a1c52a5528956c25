"""
What the processes of one proxy fleet share: bind-throttle counts (through
Redis, or through the first worker on one host), one metrics and health
endpoint for a worker group, and configuration reloads for all of them.

A package of its own rather than part of C{backends/} (directory servers)
or C{ops/} (what one process tells operators): it is the coordination
between processes, and it sits above C{core/} (it feeds
L{ldaproute.core.policy.BindThrottle}) and beside C{ops/} (whose metrics it
aggregates).
"""
