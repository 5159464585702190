"""coap: see _attach.py (plugs into the gateway)."""
