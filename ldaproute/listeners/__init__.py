"""
The client side: the LDAP protocol per client connection, CLDAP, TLS contexts.
"""
