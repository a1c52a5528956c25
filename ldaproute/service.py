# -*- test-case-name: tests.test_service -*-
"""
The twistd plugin's options and service: wires a validated configuration
into listening services.

Configuration is read and validated in L{Options.postOptions}, so a mistake
in routes.ini is a usage error before twistd daemonizes or opens a port.
L{makeService} only wires objects together; ports open when the returned
service starts.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from typing import Any
from urllib.parse import quote

import attrs
from twisted.application import strports
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, Service
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.filepath import FilePath

from ldaproute import __version__, config
from ldaproute.backends.discovery import DiscoveryService
from ldaproute.backends.health import HealthService
from ldaproute.fleet.wiring import wireFleet
from ldaproute.listeners import tls
from ldaproute.ops import check
from ldaproute.listeners.cldap import CLDAPService
from ldaproute.listeners.frontend import FrontendFactory
from ldaproute.ops.demo import DemoDirectoryService, demoLDIFPath
from ldaproute.ops.lifecycle import (
    ProxyService,
    WorkerSupervisor,
    jsonLogObserver,
    reusePortEndpoint,
    workerMetricsEndpoint,
)
from ldaproute.ops.healthsite import healthSite
from ldaproute.ops.status import StatusService, statusSnapshot
from ldaproute.runtime import Runtime

#: Where the demo proxy listens: an unprivileged port on loopback.
DEMO_LISTEN = "tcp:10389:interface=127.0.0.1"
#: Where the demo serves /metrics, /healthz, /readyz and the status page.
DEMO_METRICS = "tcp:9389:interface=127.0.0.1"


def demoConfigText(socketPath: str, listen: str = DEMO_LISTEN, metrics: str = DEMO_METRICS) -> str:
    """routes.ini for the demo: one route to the embedded directory."""
    return (
        "[ldaproute]\n"
        f"listen = {listen}\n"
        f"metrics = {metrics}\n"
        "# the demo listens on loopback only and has no certificate: allow\n"
        "# cleartext simple binds there (never do this on a real network)\n"
        "require_tls_for_simple_bind = off\n"
        "[backend:demo]\n"
        f"url = ldapi://{quote(socketPath, safe='')}\n"
        "[pool:demo]\n"
        "backends = demo\n"
        "[route:all]\n"
        "pool = demo\n"
    )


class Options(usage.Options):
    """C{twistd ldaproute} options."""

    synopsis = "[-c routes.ini | --demo]"
    longdesc = (
        "Run the ldaproute LDAP proxy. With -c, serve the listeners, pools and "
        "routes of that file. With --demo, serve a proxy on 127.0.0.1:10389 in "
        "front of a small built-in directory (dc=example,dc=com)."
    )
    optFlags = [
        ["demo", None, "Serve the built-in demo directory through the proxy."],
        ["check", None, "Validate the configuration, print its summary and warnings, and exit (no port opens)."],
        ["version", None, "Print the version and exit."],
    ]
    optParameters = [
        ["config", "c", None, "Path to routes.ini."],
        ["demo-listen", None, DEMO_LISTEN, "Endpoint the demo proxy listens on."],
        ["demo-metrics", None, DEMO_METRICS, "Endpoint of the demo's metrics site and status page."],
        ["log-format", None, None, "text or json (one JSON object per line); overrides log_format."],
        ["worker-index", None, "0", "Internal: which worker process this is (workers = N)."],
        ["group-socket", None, None, "Internal: worker 0's channel for the worker group (workers = N)."],
    ]

    def opt_version(self) -> None:
        sys.stdout.write(f"ldaproute {__version__}\n")
        sys.exit(0)

    def postOptions(self) -> None:
        self.demoSocket: str | None = None
        if self["log-format"] not in (None, "text", "json"):
            raise usage.UsageError(f"--log-format: expected text or json, not {self['log-format']!r}")
        try:
            self.workerIndex = int(self["worker-index"])
        except ValueError:
            raise usage.UsageError("--worker-index: expected a number") from None
        if self["demo"]:
            if self["config"]:
                raise usage.UsageError("give either --demo or -c routes.ini, not both")
            self.demoSocket = os.path.join(tempfile.mkdtemp(prefix="ldaproute-demo-"), "directory.sock")
            text = demoConfigText(self.demoSocket, self["demo-listen"], self["demo-metrics"])
            try:
                self.routes = config.Config.fromString(text, "<demo>")
            except config.ConfigError as e:
                raise usage.UsageError(str(e)) from None
            return
        path = self["config"] or "routes.ini"
        if not self["config"] and not os.path.exists(path):
            raise usage.UsageError(
                "no configuration: give -c routes.ini (see deploy/routes.example.ini), or --demo"
            )
        try:
            self.routes = config.Config.fromFile(FilePath(path))
        except config.ConfigError as e:
            # the one line alone: twistd prints its whole usage text for a
            # UsageError, which buries the mistake
            sys.stderr.write(f"{e}\n")
            raise SystemExit(1) from None
        if self["check"]:
            raise SystemExit(check.report(self.routes, sys.stdout))


def _hostPort(description: str) -> str:
    """C{host:port} of a C{tcp:PORT:interface=HOST} endpoint, for URLs."""
    parts = description.split(":")
    host = next((p.partition("=")[2] for p in parts if p.startswith("interface=")), "127.0.0.1")
    port = next((p for p in parts[1:] if p.isdigit()), "?")
    return f"{host}:{port}"


class _DemoGreeting(Service):
    """Says what to try once the demo has started."""

    _log = Logger()

    def __init__(self, listen: str, metrics: str) -> None:
        self._ldap = _hostPort(listen)
        self._http = _hostPort(metrics)

    def startService(self) -> None:
        super().startService()
        self._log.info(
            "Demo ready. Try: ldapsearch -x -H ldap://{ldap} -b dc=example,dc=com '(uid=alice)' ; "
            "ldapwhoami -x -H ldap://{ldap} -D uid=alice,ou=people,dc=example,dc=com -w alicepass ; "
            "status page http://{http}/ ; metrics http://{http}/metrics ; http://{http}/healthz ; http://{http}/readyz",
            ldap=self._ldap,
            http=self._http,
        )


class _RemoveDirectoryOnStop(Service):
    """Removes the demo's temporary socket directory when the proxy stops."""

    def __init__(self, path: str) -> None:
        self._path = path

    def stopService(self) -> None:
        super().stopService()
        shutil.rmtree(self._path, ignore_errors=True)


def makeService(options: Options, reactor: Any = None) -> IService:
    """
    Listening services for every listener of the configuration, the
    metrics site, and worker processes.  Signal handlers (SIGHUP: reload)
    are installed only on the global reactor.
    """
    installSignals = reactor is None
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        reactor = globalReactor
    runtime = Runtime(options.routes, reactor=reactor)
    routes = options.routes
    logFormat = options["log-format"] or routes.logFormat
    if logFormat != routes.logFormat:
        routes = attrs.evolve(routes, logFormat=logFormat)
        runtime.apply(routes)
    top = ProxyService(runtime, reactor, installSignals=installSignals)
    if options.demoSocket is not None:
        # added first, so stopped last: the socket's temporary directory goes
        _RemoveDirectoryOnStop(os.path.dirname(options.demoSocket)).setServiceParent(top)
        DemoDirectoryService(f"unix:{options.demoSocket}", demoLDIFPath(), reactor).setServiceParent(top)
    if options.demoSocket is not None:
        _DemoGreeting(options["demo-listen"], options["demo-metrics"]).setServiceParent(top)
    serverTLS = {}
    factories = []
    workerIndex = getattr(options, "workerIndex", 0)
    status = StatusService(runtime.observer.status)
    status.setName("status")
    status.setServiceParent(top)
    site = None
    if routes.metrics is not None and (workerIndex == 0 or routes.metricsPerWorker):
        site = healthSite(
            runtime.observer.metrics,
            top.readiness,
            lambda: statusSnapshot(runtime, top.readiness, reactor.seconds()),
        )
        metricsService = strports.service(workerMetricsEndpoint(routes.metrics, workerIndex), site, reactor=reactor)
        metricsService.setName("metrics")
        metricsService.setServiceParent(top)
    for listener in options.routes.listeners:
        context = tls.serverTLSFor(listener)
        if context is not None:
            serverTLS[listener.name] = context
        factory = FrontendFactory(listener, runtime, reactor, context)
        factories.append(factory)
        for description in listener.endpoints:
            if routes.workers > 1:
                service = StreamServerEndpointService(reusePortEndpoint(reactor, description), factory)
                service._raiseSynchronously = True
            else:
                service = strports.service(description, factory, reactor=reactor)
            service.setName(f"listener:{listener.name}:{description}")
            service.setServiceParent(top)
    if options.routes.cldapEndpoints:
        CLDAPService(runtime, reactor).setServiceParent(top)
    health = HealthService(runtime, reactor)
    health.setName("health")
    health.setServiceParent(top)
    discovery = DiscoveryService(runtime, reactor, changed=health.reconcile)
    discovery.setName("discovery")
    discovery.setServiceParent(top)
    #: listener name -> ServerTLS; SIGHUP calls .reload() on each
    top.serverTLS = serverTLS  # type: ignore[attr-defined]
    fleetArgs = wireFleet(top, routes, workerIndex, options["group-socket"], factories, site, reactor)
    if routes.workers > 1 and workerIndex == 0:
        extra = ["--log-format", options["log-format"]] if options["log-format"] else []
        extra += fleetArgs
        top.workers = WorkerSupervisor(reactor, routes.path, routes.workers, extra)
        top.workers.setName("workers")
        top.workers.setServiceParent(top)
    return top
