"""
Bytes only, no policy: BER framing and envelopes, whole-PDU edits, the PROXY header, write-through.
"""
