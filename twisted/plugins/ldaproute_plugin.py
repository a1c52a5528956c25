"""The twistd entry point: ``twistd -n ldaproute -c routes.ini``."""
from twisted.application.service import ServiceMaker

ldaproute = ServiceMaker(
    "ldaproute",
    "ldaproute.service",
    "An LDAP proxy and router: routes operations to pools of directory servers.",
    "ldaproute",
)
