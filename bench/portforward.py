"""Twisted's stock twisted.protocols.portforward, with TCP_NODELAY on both
sides: the floor for a naive Python proxy (raw bytes, no LDAP parsing).

    python bench/portforward.py LISTEN_PORT BACKEND_HOST BACKEND_PORT
"""
import sys

from twisted.internet import reactor
from twisted.protocols import portforward


class NoDelayClient(portforward.ProxyClient):
    def connectionMade(self):
        self.transport.setTcpNoDelay(True)
        portforward.ProxyClient.connectionMade(self)


class NoDelayClientFactory(portforward.ProxyClientFactory):
    protocol = NoDelayClient


class NoDelayServer(portforward.ProxyServer):
    clientProtocolFactory = NoDelayClientFactory

    def connectionMade(self):
        self.transport.setTcpNoDelay(True)
        portforward.ProxyServer.connectionMade(self)


class NoDelayFactory(portforward.ProxyFactory):
    protocol = NoDelayServer


def main():
    listen, host, port = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    reactor.listenTCP(listen, NoDelayFactory(host, port), backlog=1024, interface="127.0.0.1")
    reactor.run()


if __name__ == "__main__":
    main()
