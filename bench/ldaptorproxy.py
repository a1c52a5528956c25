"""ldaptor's ProxyBase (full decode and re-encode of every message) as a plain
pass-through proxy, with TCP_NODELAY on both sides.

    python bench/ldaptorproxy.py LISTEN_PORT BACKEND_HOST BACKEND_PORT
"""
import sys

from twisted.internet import protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

from ldaptor.protocols.ldap.ldapclient import LDAPClient
from ldaptor.protocols.ldap.proxybase import ProxyBase


class NoDelayLDAPClient(LDAPClient):
    def connectionMade(self):
        self.transport.setTcpNoDelay(True)
        LDAPClient.connectionMade(self)


class PassThroughProxy(ProxyBase):
    def connectionMade(self):
        self.transport.setTcpNoDelay(True)
        ProxyBase.connectionMade(self)


def main():
    listen, host, port = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    endpoint = TCP4ClientEndpoint(reactor, host, port)

    def connector():
        return connectProtocol(endpoint, NoDelayLDAPClient())

    factory = protocol.ServerFactory()

    def build(addr):
        p = PassThroughProxy()
        p.clientConnector = connector
        p.factory = factory
        return p

    factory.buildProtocol = build
    reactor.listenTCP(listen, factory, backlog=1024, interface="127.0.0.1")
    reactor.run()


if __name__ == "__main__":
    main()
